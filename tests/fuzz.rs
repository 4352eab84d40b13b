//! The front end and passes never panic: 10,000 mutations of the good inputs (deleted,
//! duplicated and swapped ranges, inserted tokens, extreme numbers) must each compile or be
//! rejected with diagnostics — and every diagnostic must render.

mod common;
use common::*;
use spacetune::fuzzing::VOCABULARY;
use spacetune::{compile_str, Options};

/// xorshift64*: small, seeded, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut s: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(3) {
        let n = s.len();
        let (a, b) = {
            let a = rng.below(n + 1);
            let b = (a + rng.below(40)).min(n);
            (a, b)
        };
        match rng.below(5) {
            0 => {
                s.drain(a..b);
            }
            1 => {
                let piece: Vec<char> = s[a..b].to_vec();
                let at = rng.below(s.len() + 1);
                s.splice(at..at, piece);
            }
            2 | 3 => {
                let t = VOCABULARY[rng.below(VOCABULARY.len())];
                let at = rng.below(s.len() + 1);
                s.splice(at..at, format!(" {t} ").chars());
            }
            _ => {
                // Replace a digit run with an extreme number.
                if let Some(i) = (a..n).find(|&i| s[i].is_ascii_digit()) {
                    let end = (i..n).find(|&j| !s[j].is_ascii_digit()).unwrap_or(n);
                    let t = [
                        "0",
                        "1",
                        "7",
                        "4096",
                        "65536",
                        "2000000",
                        "9223372036854775807",
                    ][rng.below(7)];
                    s.splice(i..end, t.chars());
                }
            }
        }
    }
    s.into_iter().collect()
}

#[test]
fn ten_thousand_mutated_inputs_never_panic() {
    let inputs: Vec<(String, String)> = good_inputs()
        .iter()
        .map(|p| (stem(p), std::fs::read_to_string(p).unwrap()))
        .collect();
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let (mut accepted, mut rejected) = (0, 0);
    let base = root().join("examples");
    for i in 0..10_000 {
        let (name, text) = &inputs[i % inputs.len()];
        let mutated = mutate(&mut rng, text);
        let outcome = std::panic::catch_unwind(|| {
            let c = compile_str(
                name,
                &mutated,
                Some(&base),
                Options {
                    validate: true,
                    ..Options::default()
                },
            );
            match c.result {
                Ok(_) => true,
                Err(d) => {
                    assert!(!d.0.is_empty(), "rejected without a diagnostic");
                    assert!(!d.render(&c.sources).is_empty());
                    false
                }
            }
        });
        match outcome {
            Ok(true) => accepted += 1,
            Ok(false) => rejected += 1,
            Err(_) => panic!("mutation {i} of {name} panicked; input:\n{mutated}"),
        }
    }
    // Both outcomes must occur, or the mutations are not exercising anything.
    assert!(
        accepted > 500 && rejected > 500,
        "accepted {accepted}, rejected {rejected}"
    );
}
