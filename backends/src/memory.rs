//! The process's peak resident memory (Linux `VmHWM`), and resetting it so that one stage
//! of a run — a search, a baseline — can be measured on its own in the same process.

/// The peak resident set size since the process started or since the last
/// [`reset_peak`], in bytes; `None` where `/proc/self/status` cannot tell.
pub fn peak_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Starts a new peak from the current resident set (writing 5 to `/proc/self/clear_refs`).
/// Returns whether the kernel took it; where it did not, [`peak_bytes`] keeps the peak of
/// the whole process, which is an upper bound of the stage's.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_forgets_a_larger_earlier_peak() {
        let big = vec![1u8; 256 << 20];
        // Touch every page so that it is resident.
        let touched = big.iter().step_by(4096).map(|&b| b as u64).sum::<u64>();
        assert!(touched > 0);
        let with = peak_bytes().expect("Linux reports VmHWM");
        drop(big);
        assert!(reset_peak(), "clear_refs takes 5");
        let after = peak_bytes().unwrap();
        assert!(
            with >= after + (200 << 20),
            "peak {with} before the reset, {after} after: the 256 MiB are forgotten"
        );
    }
}
