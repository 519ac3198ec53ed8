//! Procedural two-class sets whose difference is known, for tests and demos that must run in
//! seconds: spiky "kiki" stars against round "bouba" blobs (the Köhler / Ramachandran shapes).
//!
//! Each shape is a radius function of the angle around a jittered centre: kiki's falls linearly
//! from the outer to the inner radius between its 5 to 8 spikes; bouba's is a gentle sum of two
//! low-frequency sines. Size, rotation and brightness vary per image; everything follows the seed.

use std::f64::consts::TAU;

use foil_core::{Error, Result};
use image::{DynamicImage, GrayImage};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

use crate::dataset::{Dataset, Item};

/// The two shape classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A round blob.
    Bouba,
    /// A spiky star.
    Kiki,
}

/// Parameters of one drawn shape.
#[derive(Debug, Clone, Copy)]
struct Params {
    cx: f64,
    cy: f64,
    radius: f64,
    rotation: f64,
    lobes: f64,
    depth: f64,
    phase: f64,
    ink: f64,
}

fn radius(shape: Shape, p: &Params, angle: f64) -> f64 {
    let a = angle - p.rotation;
    match shape {
        Shape::Kiki => {
            // Triangle wave in [0, 1] with `lobes` peaks per turn: 1 at a spike, 0 between.
            let t = (a * p.lobes / TAU).rem_euclid(1.0);
            let tri = 1.0 - 2.0 * (t - 0.5).abs();
            p.radius * (1.0 - p.depth + p.depth * tri)
        }
        Shape::Bouba => {
            p.radius * (1.0 + 0.08 * (p.lobes * 0.5 * a + p.phase).sin() + 0.05 * (3.0 * a).cos())
        }
    }
}

/// Draws one shape on a `size` x `size` gray image (4 x 4 supersampled edges).
pub fn draw(shape: Shape, size: u32, rng: &mut impl Rng) -> GrayImage {
    let s = size as f64;
    let p = Params {
        cx: s / 2.0 + rng.random_range(-0.08..0.08) * s,
        cy: s / 2.0 + rng.random_range(-0.08..0.08) * s,
        radius: rng.random_range(0.26..0.36) * s,
        rotation: rng.random_range(0.0..TAU),
        lobes: rng.random_range(5..=8) as f64,
        depth: rng.random_range(0.45..0.6),
        phase: rng.random_range(0.0..TAU),
        ink: rng.random_range(0.75..1.0),
    };
    let mut img = GrayImage::new(size, size);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let mut inside = 0u32;
        for sy in 0..4 {
            for sx in 0..4 {
                let dx = x as f64 + (sx as f64 + 0.5) / 4.0 - p.cx;
                let dy = y as f64 + (sy as f64 + 0.5) / 4.0 - p.cy;
                if dx.hypot(dy) <= radius(shape, &p, dy.atan2(dx)) {
                    inside += 1;
                }
            }
        }
        px.0[0] = (inside as f64 / 16.0 * p.ink * 255.0).round() as u8;
    }
    img
}

/// `per_class` bouba (label 0) and kiki (label 1) images of `size` x `size`, interleaved, seeded.
pub fn kiki_bouba(per_class: usize, size: u32, seed: u64) -> Result<Dataset> {
    if per_class == 0 {
        return Err(Error::out_of_range(
            "images per class",
            "at least 1",
            per_class,
        ));
    }
    if size < 8 {
        return Err(Error::out_of_range("image size", "at least 8 pixels", size));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut items = Vec::with_capacity(2 * per_class);
    for i in 0..per_class {
        for (label, shape) in [Shape::Bouba, Shape::Kiki].into_iter().enumerate() {
            let image = DynamicImage::ImageLuma8(draw(shape, size, &mut rng));
            let name = if label == 0 { "bouba" } else { "kiki" };
            items.push(Item {
                image: image.into(),
                label,
                source: format!("kiki-bouba/{seed}/{name}/{i}"),
            });
        }
    }
    Dataset::new(vec!["bouba".into(), "kiki".into()], items)
}
