//! Smoke test: libtorch is found at run time through the rpath baked in by build.rs.
#[test]
fn creates_and_multiplies_a_tensor() {
    let a = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
    let b = &a * 2.0;
    assert_eq!(Vec::<f32>::try_from(&b).unwrap(), vec![2.0, 4.0, 6.0]);
}
