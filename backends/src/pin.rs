//! Pinning the timing thread to one core while it times, so every window of a chunk runs on
//! the same core and no migration lands inside a timed run.
//!
//! The pin is part of the measurement protocol ([`crate::measure::Protocol::pin`]), not of a
//! backend: it holds for whatever runs on the calling thread (ORT with one intra-op thread,
//! TVM's and libtorch's single-threaded runtimes, an `exec` child started from it).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Where the timing thread runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pin {
    /// Wherever the scheduler puts it (and moves it).
    Off,
    /// The highest-numbered core the process may run on: on Linux the kernel's own
    /// housekeeping tends to land on core 0.
    Last,
    /// This core.
    Core(usize),
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pin::Off => f.write_str("off"),
            Pin::Last => f.write_str("last"),
            Pin::Core(c) => write!(f, "{c}"),
        }
    }
}

impl std::str::FromStr for Pin {
    type Err = String;
    fn from_str(s: &str) -> Result<Pin, String> {
        match s {
            "off" | "none" => Ok(Pin::Off),
            "last" => Ok(Pin::Last),
            n => n
                .parse()
                .map(Pin::Core)
                .map_err(|_| format!("a cpu is a core number, `last` or `off`, not `{n}`")),
        }
    }
}

/// The calling thread pinned to one core until dropped; its previous set of cores is then
/// restored.
pub struct Pinned {
    #[cfg(target_os = "linux")]
    previous: Option<libc::cpu_set_t>,
    /// The core it runs on (`None`: not pinned).
    pub core: Option<usize>,
}

impl Pinned {
    /// Pins the calling thread as `pin` says; an error names a core the process may not use.
    pub fn new(pin: Pin) -> Result<Pinned, String> {
        imp::pin(pin)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        imp::restore(self);
    }
}

/// The cores the calling thread may run on.
pub fn allowed() -> Vec<usize> {
    imp::allowed()
}

#[cfg(target_os = "linux")]
mod imp {
    use super::{Pin, Pinned};

    fn current() -> Option<libc::cpu_set_t> {
        // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size into
        // it, for the calling thread (pid 0).
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            let size = std::mem::size_of::<libc::cpu_set_t>();
            (libc::sched_getaffinity(0, size, &mut set) == 0).then_some(set)
        }
    }

    fn members(set: &libc::cpu_set_t) -> Vec<usize> {
        // SAFETY: CPU_ISSET reads the set within its fixed size (CPU_SETSIZE bits).
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| unsafe { libc::CPU_ISSET(c, set) })
            .collect()
    }

    fn set(set: &libc::cpu_set_t) -> bool {
        // SAFETY: as in `current`; the set is initialised.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) == 0 }
    }

    pub fn allowed() -> Vec<usize> {
        current().map(|s| members(&s)).unwrap_or_default()
    }

    pub fn pin(pin: Pin) -> Result<Pinned, String> {
        let unpinned = Pinned {
            previous: None,
            core: None,
        };
        if pin == Pin::Off {
            return Ok(unpinned);
        }
        let previous = current().ok_or("cannot read which cores this thread may run on")?;
        let allowed = members(&previous);
        let core = match pin {
            Pin::Core(c) if allowed.contains(&c) => c,
            Pin::Core(c) => {
                return Err(format!(
                "cannot pin the timing thread to cpu {c}: this process may run on {allowed:?} only"
            ))
            }
            _ => *allowed.last().ok_or("this thread may run on no core")?,
        };
        // SAFETY: zeroed is the empty set; CPU_SET writes within its fixed size.
        let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::CPU_SET(core, &mut one) };
        if !set(&one) {
            return Err(format!(
                "cannot pin the timing thread to cpu {core}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Pinned {
            previous: Some(previous),
            core: Some(core),
        })
    }

    pub fn restore(p: &mut Pinned) {
        if let Some(previous) = p.previous.take() {
            set(&previous);
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::{Pin, Pinned};

    pub fn allowed() -> Vec<usize> {
        Vec::new()
    }

    pub fn pin(pin: Pin) -> Result<Pinned, String> {
        match pin {
            Pin::Off => Ok(Pinned { core: None }),
            _ => Err("pinning the timing thread needs Linux; use --cpu off".into()),
        }
    }

    pub fn restore(_: &mut Pinned) {}
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_pin_holds_while_it_lives_and_is_undone_after() {
        let before = allowed();
        {
            let p = Pinned::new(Pin::Last).unwrap();
            assert_eq!(p.core, before.last().copied());
            assert_eq!(allowed(), vec![p.core.unwrap()]);
        }
        assert_eq!(allowed(), before);
        let bad = Pinned::new(Pin::Core(4096)).err().unwrap();
        assert!(bad.contains("cpu 4096"), "{bad}");
        assert_eq!(allowed(), before);
        assert_eq!("off".parse::<Pin>(), Ok(Pin::Off));
        assert_eq!("3".parse::<Pin>(), Ok(Pin::Core(3)));
        assert!("x".parse::<Pin>().is_err());
    }
}
