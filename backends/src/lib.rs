//! Backends: the black boxes spacetune lowers networks to and times them on.
