//! Class directions and how they are applied to embeddings.

use burn::tensor::{Tensor, backend::Backend};
use foil_core::tensor::{ensure_finite, fmt_dims, to_vec_f32};
use foil_core::{Error, Result};

/// How a direction is added to an embedding `c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EditForm {
    /// DIFFusion's public code: `c' = |c| (c / |c| + lambda d)`, not renormalised, so the
    /// norm of `c'` changes with lambda.
    #[default]
    Reference,
    /// `c' = |c| normalise(c / |c| + lambda d)`: the edit turns `c` and keeps its norm.
    Normalized,
}

/// A direction in embedding space from one class to another (`mu_to - mu_from`).
#[derive(Debug, Clone, PartialEq)]
pub struct Direction {
    from: String,
    to: String,
    vector: Vec<f64>,
}

impl Direction {
    /// A direction named `from -> to`.
    pub fn new(from: impl Into<String>, to: impl Into<String>, vector: Vec<f64>) -> Self {
        Self {
            from: from.into(),
            to: to.into(),
            vector,
        }
    }

    /// The source class.
    pub fn from(&self) -> &str {
        &self.from
    }

    /// The target class.
    pub fn to(&self) -> &str {
        &self.to
    }

    /// The vector.
    pub fn vector(&self) -> &[f64] {
        &self.vector
    }

    /// Euclidean norm.
    pub fn norm(&self) -> f64 {
        self.vector.iter().map(|v| v * v).sum::<f64>().sqrt()
    }

    /// The opposite direction (`to -> from`).
    pub fn reversed(&self) -> Self {
        Self::new(
            &self.to,
            &self.from,
            self.vector.iter().map(|v| -v).collect(),
        )
    }

    /// Cosine between this direction and `other` (0 if either is zero).
    pub fn cosine(&self, other: &Direction) -> Result<f64> {
        self.check_width(other)?;
        let dot: f64 = self
            .vector
            .iter()
            .zip(&other.vector)
            .map(|(a, b)| a * b)
            .sum();
        let n = self.norm() * other.norm();
        Ok(if n == 0.0 { 0.0 } else { dot / n })
    }

    /// Removes the component along `nuisance` (Gram–Schmidt), so that editing along the result
    /// leaves the nuisance attribute (a background, say) alone. Returns the cleaned direction
    /// and the cosine between the two before cleaning: how entangled they were.
    pub fn without(&self, nuisance: &Direction) -> Result<(Direction, f64)> {
        let cos = self.cosine(nuisance)?;
        let nn: f64 = nuisance.vector.iter().map(|v| v * v).sum();
        if nn == 0.0 {
            return Err(Error::out_of_range(
                format!(
                    "norm of the nuisance direction {} -> {}",
                    nuisance.from, nuisance.to
                ),
                "> 0 (identical groups give no direction to remove)",
                0,
            ));
        }
        let dot: f64 = self
            .vector
            .iter()
            .zip(&nuisance.vector)
            .map(|(a, b)| a * b)
            .sum();
        let vector = self
            .vector
            .iter()
            .zip(&nuisance.vector)
            .map(|(a, b)| a - dot / nn * b)
            .collect();
        Ok((Direction::new(&self.from, &self.to, vector), cos))
    }

    fn check_width(&self, other: &Direction) -> Result<()> {
        if self.vector.len() == other.vector.len() {
            Ok(())
        } else {
            Err(Error::shape(
                "directions",
                format!("equal widths ({})", self.vector.len()),
                other.vector.len(),
            ))
        }
    }

    /// The direction as a `[1, D]` tensor.
    pub fn to_tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 2> {
        let v: Vec<f32> = self.vector.iter().map(|&x| x as f32).collect();
        Tensor::<B, 1>::from_floats(v.as_slice(), device).unsqueeze_dim(0)
    }
}

/// Moves embeddings `c` (`[N, D]`) along `direction` by `lambda` (any sign; 0 is the identity).
pub fn apply<B: Backend>(
    c: Tensor<B, 2>,
    direction: &Direction,
    lambda: f64,
    form: EditForm,
) -> Result<Tensor<B, 2>> {
    let [n, d] = c.dims();
    if d != direction.vector.len() {
        return Err(Error::shape(
            "embeddings",
            format!("[N, {}] (the direction's width)", direction.vector.len()),
            fmt_dims(&[n, d]),
        ));
    }
    if !lambda.is_finite() {
        return Err(Error::out_of_range("lambda", "finite", lambda));
    }
    ensure_finite(&c, "embeddings", "")?;
    let norm = c.clone().powf_scalar(2.0).sum_dim(1).sqrt(); // [N, 1]
    if let Some(i) = to_vec_f32(&norm)?.iter().position(|&v| v <= 0.0) {
        return Err(Error::out_of_range(
            format!("norm of embedding {i}"),
            "> 0 (a zero embedding has no direction)",
            0,
        ));
    }
    let unit = c / norm.clone();
    let moved = unit + direction.to_tensor::<B>(&norm.device()) * lambda;
    Ok(match form {
        EditForm::Reference => moved * norm,
        EditForm::Normalized => {
            let m = moved
                .clone()
                .powf_scalar(2.0)
                .sum_dim(1)
                .sqrt()
                .clamp_min(1e-12);
            moved / m * norm
        }
    })
}

/// [`apply`] for each lambda in `lambdas` (the paper's interpolation figure uses negative ones too).
pub fn sweep<B: Backend>(
    c: Tensor<B, 2>,
    direction: &Direction,
    lambdas: &[f64],
    form: EditForm,
) -> Result<Vec<Tensor<B, 2>>> {
    lambdas
        .iter()
        .map(|&l| apply(c.clone(), direction, l, form))
        .collect()
}
