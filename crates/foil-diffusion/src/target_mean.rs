//! The target-mean baseline as its own [`Method`] (docs/adding-a-method.md walks through it):
//! DIFFusion's search with the other class's mean embedding in place of the arithmetic.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use foil_core::tensor::{from_vec, row_norms};
use foil_core::{Classifier, Cost, Explained, Method, Outcome};
use foil_core::{Request, Result, Setting};

use crate::method::{Rows, check_request, groups, keys, subset};
use crate::{Decoder, Editor, Regenerator, SearchConfig, search};

/// The target-mean baseline over DIFFusion's engine between two classes (label 0, label 1, as
/// named in the engine's statistics), judged by an oracle.
pub struct TargetMean<'a, B: Backend, D, C> {
    /// DIFFusion's engine: decoder, inverter, statistics, search settings.
    pub editor: Editor<'a, B, D>,
    /// The classifier that judges flips.
    pub oracle: &'a C,
    /// The class names, by label.
    pub classes: [String; 2],
}

/// A regenerator whose conditions are replaced by `mean` at each condition's norm.
struct MeanRegenerator<R, B: Backend> {
    inner: R,
    mean: Tensor<B, 2>,
}

impl<B: Backend, R: Regenerator<B>> Regenerator<B> for MeanRegenerator<R, B> {
    type State = R::State;
    fn num_steps(&self) -> usize {
        self.inner.num_steps()
    }
    fn invert(&self, images: Tensor<B, 4>) -> Result<R::State> {
        self.inner.invert(images)
    }
    fn generate(
        &self,
        s: &R::State,
        i: &[usize],
        c: Tensor<B, 2>,
        k: usize,
    ) -> Result<Tensor<B, 4>> {
        let cond = self.mean.clone().repeat_dim(0, i.len()) * row_norms(c);
        self.inner.generate(s, i, cond, k)
    }
}

impl<B, D, C> Method<B> for TargetMean<'_, B, D, C>
where
    B: Backend,
    D: Decoder<B>,
    C: Classifier<B>,
{
    fn name(&self) -> &str {
        "target-mean"
    }

    /// Per group of inputs with the same label and target, one search with lambda 0 (it then
    /// hands each input's own embedding to the regenerator, which swaps it for the mean).
    fn explain(&self, r: Request<'_, B>) -> Result<Explained<B>> {
        check_request(&r.images, r.labels, r.targets)?;
        let (config, stats, n) = (self.editor.config(), self.editor.stats(), r.targets.len());
        let keys = keys(r.labels, r.targets);
        let mut rows = Rows::new(n);
        for ((label, target), members) in groups(&keys) {
            let (from, away) = (&self.classes[label], &self.classes[1 - label]);
            let mean = stats.unit_mean(away)?;
            let regenerator = MeanRegenerator {
                inner: self.editor.regenerator(r.seed),
                mean: from_vec(mean.clone(), [1, mean.len()], &r.images.device())?,
            };
            let (x, d) = (subset(&r.images, &members, n), stats.direction(from, away)?);
            let settings = SearchConfig {
                lambda: 0.0,
                ..config.search.clone()
            };
            let decoder = self.editor.decoder();
            let report = search(decoder, &regenerator, self.oracle, x, &d, target, &settings)?;
            for (j, (&i, o)) in members.iter().zip(report.outcomes).enumerate() {
                let cost = Cost {
                    denoiser_calls: config.denoiser_calls(o.trials),
                    classifier_calls: o.trials,
                    encoder_calls: 1,
                };
                let setting = o.t_skip.map(|t_skip| Setting::Edit {
                    t_skip,
                    lambda: None,
                });
                let outcome = Outcome {
                    flipped: o.flipped,
                    setting,
                    cost,
                };
                rows.put(i, report.images.clone().narrow(0, j, 1), outcome);
            }
        }
        rows.finish()
    }
}
