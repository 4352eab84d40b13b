//! Data sets for accuracy profiling: Fashion-MNIST (IDX, gzip) — the real default, from
//! Debian's `dataset-fashion-mnist` —, the CIFAR-10 binary format for users who have it, and
//! a small generated set for fast tests. Images are float32 N×C×H×W, pixels in [0, 1].

use crate::{BackendError, Result};
use flate2::read::GzDecoder;
use spacetune_ir::Shape;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where Debian's `dataset-fashion-mnist` puts the files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

#[derive(Clone, Debug)]
pub struct Dataset {
    pub name: String,
    pub shape: Shape,
    pub classes: usize,
    /// N × C × H × W, row-major.
    pub images: Vec<f32>,
    pub labels: Vec<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// The bytes of `path`, gunzipped if it ends in `.gz`; `hint` says where the file comes from.
fn read_all(path: &Path, hint: &str) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(BackendError::io(format!(
        "opening {} ({hint})",
        path.display()
    )))?;
    let mut bytes = Vec::new();
    let read = if path.extension().is_some_and(|e| e == "gz") {
        GzDecoder::new(file).read_to_end(&mut bytes)
    } else {
        std::io::BufReader::new(file).read_to_end(&mut bytes)
    };
    read.map_err(BackendError::io(format!("reading {}", path.display())))?;
    Ok(bytes)
}

fn bad(path: &Path, why: impl std::fmt::Display) -> BackendError {
    BackendError::Unsupported(format!("{}: {why}", path.display()))
}

/// An IDX file: its dimensions and unsigned-byte payload.
fn idx(path: &Path, rank: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let bytes = read_all(
        path,
        "Fashion-MNIST comes from Debian's dataset-fashion-mnist",
    )?;
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(path, "not an IDX file"));
    }
    if bytes[2] != 0x08 {
        return Err(bad(
            path,
            format!("IDX type {:#04x}, expected unsigned bytes", bytes[2]),
        ));
    }
    if bytes[3] as usize != rank {
        return Err(bad(path, format!("rank {}, expected {rank}", bytes[3])));
    }
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(bad(path, "truncated header"));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let n: usize = dims.iter().product();
    if bytes.len() != header + n {
        return Err(bad(
            path,
            format!(
                "{} payload bytes, the header says {n}",
                bytes.len() - header
            ),
        ));
    }
    Ok((dims, bytes[header..].to_vec()))
}

impl Dataset {
    /// Fashion-MNIST from `dir` (IDX, gzip or not).
    pub fn fashion_mnist(dir: &Path, split: Split) -> Result<Dataset> {
        let prefix = match split {
            Split::Train => "train",
            Split::Test => "t10k",
        };
        let find = |stem: &str| -> PathBuf {
            let gz = dir.join(format!("{stem}.gz"));
            if gz.exists() {
                gz
            } else {
                dir.join(stem)
            }
        };
        let images_path = find(&format!("{prefix}-images-idx3-ubyte"));
        let labels_path = find(&format!("{prefix}-labels-idx1-ubyte"));
        let (dims, pixels) = idx(&images_path, 3)?;
        let (ldims, labels) = idx(&labels_path, 1)?;
        if ldims[0] != dims[0] {
            return Err(bad(
                &labels_path,
                format!("{} labels for {} images", ldims[0], dims[0]),
            ));
        }
        if let Some(l) = labels.iter().find(|&&l| l > 9) {
            return Err(bad(&labels_path, format!("label {l} out of 0..=9")));
        }
        Ok(Dataset {
            name: format!("fashion-mnist/{prefix}"),
            shape: Shape::new(1, dims[1] as u64, dims[2] as u64),
            classes: 10,
            images: pixels.iter().map(|&p| p as f32 / 255.0).collect(),
            labels: labels.iter().map(|&l| l as i64).collect(),
        })
    }

    /// CIFAR-10's binary format: records of 1 label byte + 3×32×32 pixel bytes, in
    /// `data_batch_1.bin` … `data_batch_5.bin` (train) or `test_batch.bin` (test).
    pub fn cifar10(dir: &Path, split: Split) -> Result<Dataset> {
        let files: Vec<PathBuf> = match split {
            Split::Train => (1..=5)
                .map(|i| dir.join(format!("data_batch_{i}.bin")))
                .collect(),
            Split::Test => vec![dir.join("test_batch.bin")],
        };
        const RECORD: usize = 1 + 3 * 32 * 32;
        const RECORDS: usize = 10_000;
        if !dir.is_dir() {
            return Err(bad(
                dir,
                "no such directory (cifar10:DIR names the directory of CIFAR-10's binary version)",
            ));
        }
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        for f in &files {
            if !f.is_file() {
                return Err(bad(
                    dir,
                    format!(
                        "no {} in the directory (CIFAR-10's binary version has data_batch_1.bin … data_batch_5.bin and test_batch.bin)",
                        f.file_name().unwrap_or_default().to_string_lossy()
                    ),
                ));
            }
            let bytes = read_all(f, "CIFAR-10's binary version")?;
            if bytes.len() != RECORDS * RECORD {
                return Err(bad(
                    f,
                    format!(
                        "{} bytes ({:.1} records): a CIFAR-10 batch file holds {RECORDS} records of {RECORD} bytes; truncated or not CIFAR-10",
                        bytes.len(),
                        bytes.len() as f64 / RECORD as f64
                    ),
                ));
            }
            for rec in bytes.chunks(RECORD) {
                if rec[0] > 9 {
                    return Err(bad(f, format!("label {} out of 0..=9", rec[0])));
                }
                labels.push(rec[0] as i64);
                images.extend(rec[1..].iter().map(|&p| p as f32 / 255.0));
            }
        }
        Ok(Dataset {
            name: format!(
                "cifar-10/{}",
                if split == Split::Train {
                    "train"
                } else {
                    "test"
                }
            ),
            shape: Shape::new(3, 32, 32),
            classes: 10,
            images,
            labels,
        })
    }

    /// A small learnable set for tests: class c is a grating (5 orientations × 2 spatial
    /// frequencies) with a random phase, plus noise — texture, so it survives the global
    /// pooling every network of the examples ends with.
    pub fn synthetic(n: usize, shape: Shape, classes: usize, seed: u64) -> Dataset {
        let mut rng = crate::weights::Rng::new(seed);
        let mut images = Vec::with_capacity(n * shape.elements() as usize);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let c = i % classes;
            labels.push(c as i64);
            let angle = std::f32::consts::PI * (c % 5) as f32 / 5.0;
            let period = 3.0 + 3.0 * (c / 5 % 2) as f32 + (c / 10) as f32;
            let freq = 2.0 * std::f32::consts::PI / period;
            let phase = std::f32::consts::PI * rng.symmetric();
            let (cos, sin) = (angle.cos(), angle.sin());
            for _ in 0..shape.c {
                for y in 0..shape.h {
                    for x in 0..shape.w {
                        let t = freq * (x as f32 * cos + y as f32 * sin) + phase;
                        images.push(0.5 + 0.35 * t.sin() + 0.15 * rng.symmetric());
                    }
                }
            }
        }
        Dataset {
            name: format!("synthetic-{classes}x{shape}"),
            shape,
            classes,
            images,
            labels,
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn pick(&self, indices: &[usize], name: String) -> Dataset {
        let per = self.shape.elements() as usize;
        let mut images = Vec::with_capacity(indices.len() * per);
        for &i in indices {
            images.extend_from_slice(&self.images[i * per..(i + 1) * per]);
        }
        Dataset {
            name,
            shape: self.shape,
            classes: self.classes,
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }

    /// A seeded random split: (the rest, `held_out` examples) — the validation set comes
    /// from the training set; the test set is only for final numbers.
    pub fn split(&self, held_out: usize, seed: u64) -> (Dataset, Dataset) {
        let order = crate::weights::Rng::new(seed).permutation(self.len());
        let held_out = held_out.min(self.len());
        let (val, rest) = order.split_at(held_out);
        let mut rest = rest.to_vec();
        rest.sort_unstable();
        let mut val = val.to_vec();
        val.sort_unstable();
        (
            self.pick(&rest, format!("{}[train]", self.name)),
            self.pick(&val, format!("{}[validation]", self.name)),
        )
    }

    /// The first `n` examples of a seeded shuffle (a proxy-training subset).
    pub fn subset(&self, n: usize, seed: u64) -> Dataset {
        let mut order = crate::weights::Rng::new(seed).permutation(self.len());
        order.truncate(n);
        order.sort_unstable();
        self.pick(&order, format!("{}[{n}]", self.name))
    }

    /// Fits the images to a network's input shape, saying what was done: zero padding (or
    /// a centre crop) to the spatial size, and channels repeated (1 → 3) or averaged
    /// (3 → 1). Anything else is an error.
    pub fn adapt(&self, to: Shape) -> Result<(Dataset, Option<String>)> {
        if to == self.shape {
            return Ok((self.clone(), None));
        }
        let from = self.shape;
        let channel = |x: &[f32], c: usize, i: usize| -> f32 {
            match (from.c, to.c) {
                (a, b) if a == b => x[c * i],
                (1, _) => x[0],
                (_, 1) => (0..from.c as usize).map(|k| x[k * i]).sum::<f32>() / from.c as f32,
                _ => unreachable!("checked below"),
            }
        };
        if !(from.c == to.c || from.c == 1 || to.c == 1) {
            return Err(BackendError::Unsupported(format!(
                "cannot fit {} images to a {} input: channels {} → {}",
                self.name, to, from.c, to.c
            )));
        }
        let (fh, fw, th, tw) = (from.h as i64, from.w as i64, to.h as i64, to.w as i64);
        let (oy, ox) = ((th - fh) / 2, (tw - fw) / 2);
        let per_in = from.elements() as usize;
        let plane_in = (from.h * from.w) as usize;
        let mut images = Vec::with_capacity(self.len() * to.elements() as usize);
        for n in 0..self.len() {
            let img = &self.images[n * per_in..(n + 1) * per_in];
            for c in 0..to.c as usize {
                for y in 0..th {
                    for x in 0..tw {
                        let (sy, sx) = (y - oy, x - ox);
                        let v = if (0..fh).contains(&sy) && (0..fw).contains(&sx) {
                            let at = (sy * fw + sx) as usize;
                            channel(&img[at..], c, plane_in)
                        } else {
                            0.0
                        };
                        images.push(v);
                    }
                }
            }
        }
        let how = format!(
            "{}: {} images fitted to the {} input ({}; {})",
            self.name,
            from,
            to,
            match (from.c, to.c) {
                (a, b) if a == b => "channels kept".to_string(),
                (1, b) => format!("the channel repeated {b}×"),
                (a, _) => format!("{a} channels averaged"),
            },
            if th >= fh && tw >= fw {
                format!("zero-padded {}x{} → {}x{}", fh, fw, th, tw)
            } else {
                format!("centre-cropped {}x{} → {}x{}", fh, fw, th, tw)
            }
        );
        Ok((
            Dataset {
                name: self.name.clone(),
                shape: to,
                classes: self.classes,
                images,
                labels: self.labels.clone(),
            },
            Some(how),
        ))
    }
}
