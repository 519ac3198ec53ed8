//! diffusers' scheduler configurations (`scheduler/scheduler_config.json` of a pipeline folder)
//! read into foil's [`NoiseSchedule`] and [`Steps`], and [`ConfigReader`], the strict reader of
//! publishers' JSON configurations that foil-models' `hub` module reads networks with.
//!
//! A configuration is read key by key: keys foil maps become fields, keys whose value foil cannot
//! honour are refused naming the key and the value, keys that do not change what is computed are
//! accepted, and a key foil does not know at all is an error, so a newer publisher's key that
//! would change the result is never silently ignored. Keys starting with `_` (`_class_name`,
//! `_diffusers_version`, `_name_or_path`, ...) are metadata, as diffusers itself treats them.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::path::Path;

use foil_core::{Error, Result};
use serde_json::{Map, Value};

use crate::{BetaSchedule, NoiseSchedule, Spacing, Steps, VarianceType};

/// Reads a JSON file into a [`Value`]; errors name the file.
pub fn read_json_file(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::format(path.display().to_string(), format!("not valid JSON: {e}")))
}

/// Whether two JSON values are equal, numbers compared by value (`1` equals `1.0`).
pub fn json_same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_same(a, b))
        }
        _ => a == b,
    }
}

/// A strict reader of one JSON configuration object (a diffusers or transformers `config.json`,
/// a scheduler or preprocessor configuration, a peft `adapter_config.json`).
///
/// Every getter marks its key as known; a missing key takes the default the publisher's library
/// gives it; [`finish`](Self::finish) refuses the keys nothing asked for. Errors are
/// [`Error::Format`] naming the file (`what`), the key and the value found.
#[derive(Debug)]
pub struct ConfigReader<'a> {
    what: String,
    map: &'a Map<String, Value>,
    seen: BTreeSet<String>,
}

impl<'a> ConfigReader<'a> {
    /// A reader of `value`, which must be a JSON object; `what` names it in errors (its path).
    pub fn new(value: &'a Value, what: impl Into<String>) -> Result<Self> {
        let what = what.into();
        match value {
            Value::Object(map) => Ok(Self {
                what,
                map,
                seen: BTreeSet::new(),
            }),
            other => Err(Error::format(
                what,
                format!("expected a JSON object, found {}", kind(other)),
            )),
        }
    }

    /// The name errors give the configuration (its path).
    pub fn what(&self) -> &str {
        &self.what
    }

    /// An [`Error::Format`] about `key`: `what: key `key`: detail`.
    pub fn error(&self, key: &str, detail: impl Display) -> Error {
        Error::format(self.what.clone(), format!("key `{key}`: {detail}"))
    }

    /// Whether the configuration has `key` (without marking it known).
    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// The value of `key` (`None` when absent), marking it known.
    pub fn raw(&mut self, key: &str) -> Option<&'a Value> {
        self.seen.insert(key.to_string());
        self.map.get(key)
    }

    /// Marks `keys` as known whatever their values (metadata, settings of training or of
    /// random initialisation that change nothing a loaded network computes).
    pub fn accept(&mut self, keys: &[&str]) {
        self.seen.extend(keys.iter().map(|k| k.to_string()));
    }

    /// A non-negative integer (`default` when absent).
    pub fn usize(&mut self, key: &str, default: usize) -> Result<usize> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => self.as_usize(key, v),
        }
    }

    /// A non-negative integer, `None` when absent or `null`.
    pub fn opt_usize(&mut self, key: &str) -> Result<Option<usize>> {
        match self.raw(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => self.as_usize(key, v).map(Some),
        }
    }

    /// `v` as a non-negative integer (an integral float is accepted), or an error naming `key`.
    pub fn as_usize(&self, key: &str, v: &Value) -> Result<usize> {
        let n = v.as_u64().or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u32::MAX as f64)
                .map(|f| f as u64)
        });
        n.and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| self.error(key, format!("expected a non-negative integer, found {v}")))
    }

    /// A finite number (`default` when absent).
    pub fn f64(&mut self, key: &str, default: f64) -> Result<f64> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| self.error(key, format!("expected a number, found {v}"))),
        }
    }

    /// A boolean (`default` when absent).
    pub fn bool(&mut self, key: &str, default: bool) -> Result<bool> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.error(key, format!("expected true or false, found {v}"))),
        }
    }

    /// A string (`default` when absent).
    pub fn string(&mut self, key: &str, default: &str) -> Result<String> {
        match self.raw(key) {
            None => Ok(default.to_string()),
            Some(v) => v
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| self.error(key, format!("expected a string, found {v}"))),
        }
    }

    /// A list of non-negative integers (`default` when absent).
    pub fn usize_list(&mut self, key: &str, default: &[usize]) -> Result<Vec<usize>> {
        match self.raw(key) {
            None => Ok(default.to_vec()),
            Some(Value::Array(items)) => items.iter().map(|v| self.as_usize(key, v)).collect(),
            Some(v) => Err(self.error(key, format!("expected a list of integers, found {v}"))),
        }
    }

    /// A list of strings (`default` when absent).
    pub fn string_list(&mut self, key: &str, default: &[&str]) -> Result<Vec<String>> {
        match self.raw(key) {
            None => Ok(default.iter().map(|s| s.to_string()).collect()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        self.error(key, format!("expected a list of strings, found {v}"))
                    })
                })
                .collect(),
            Some(v) => Err(self.error(key, format!("expected a list of strings, found {v}"))),
        }
    }

    /// The value of `key` (`default` when absent), which must equal one of `allowed` (numbers
    /// compared by value); otherwise an error `key `key`: <needs>, found <value>`.
    pub fn one_of(
        &mut self,
        key: &str,
        default: Value,
        allowed: &[Value],
        needs: &str,
    ) -> Result<Value> {
        let value = self.raw(key).cloned().unwrap_or(default);
        if allowed.iter().any(|a| json_same(a, &value)) {
            Ok(value)
        } else {
            Err(self.error(key, format!("{needs}, found {value}")))
        }
    }

    /// `key` must hold `expected` (its default when absent, which must then be `expected`).
    pub fn require(&mut self, key: &str, expected: Value, needs: &str) -> Result<()> {
        self.one_of(key, expected.clone(), &[expected], needs)
            .map(|_| ())
    }

    /// `key` must be absent or hold a value that switches a feature off: `null`, `false`, an
    /// empty list, object or string.
    pub fn off(&mut self, key: &str, needs: &str) -> Result<()> {
        match self.raw(key) {
            None => Ok(()),
            Some(v) if is_off(v) => Ok(()),
            Some(v) => Err(self.error(key, format!("{needs}, found {v}"))),
        }
    }

    /// The keys nothing asked for and not starting with `_`, in order.
    pub fn unknown_keys(&self) -> Vec<String> {
        self.map
            .keys()
            .filter(|k| !k.starts_with('_') && !self.seen.contains(k.as_str()))
            .cloned()
            .collect()
    }

    /// Succeeds when every key (other than `_` metadata) was asked for; otherwise one error
    /// naming every unknown key.
    pub fn finish(self) -> Result<()> {
        let unknown = self.unknown_keys();
        if unknown.is_empty() {
            return Ok(());
        }
        let listed: Vec<String> = unknown
            .iter()
            .map(|k| format!("`{k}` = {}", self.map[k]))
            .collect();
        Err(Error::format(
            self.what,
            format!(
                "unknown key{} {}: foil does not know what {} to the network, so it does \
                 not guess (written by a newer library than foil knows?)",
                if unknown.len() == 1 { "" } else { "s" },
                listed.join(", "),
                if unknown.len() == 1 {
                    "it does"
                } else {
                    "they do"
                },
            ),
        ))
    }
}

/// Whether `v` switches a feature off: `null`, `false`, or an empty list, object or string.
pub fn is_off(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The diffusers scheduler classes foil's steps reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerClass {
    /// `DDPMScheduler`: past the first training step it moves to `abar = 1`.
    Ddpm,
    /// `DDIMScheduler`: past the first training step it moves to `abar = 1` if
    /// `set_alpha_to_one`, else to `abar_0`.
    Ddim,
}

impl SchedulerClass {
    /// The class of diffusers' `_class_name`, if foil reproduces it.
    pub fn from_class_name(name: &str) -> Option<Self> {
        match name {
            "DDPMScheduler" => Some(Self::Ddpm),
            "DDIMScheduler" => Some(Self::Ddim),
            _ => None,
        }
    }

    /// diffusers' name of the class.
    pub fn class_name(self) -> &'static str {
        match self {
            Self::Ddpm => "DDPMScheduler",
            Self::Ddim => "DDIMScheduler",
        }
    }
}

/// A diffusers `DDPMScheduler` / `DDIMScheduler` configuration (diffusers 0.31), as foil's
/// schedule and spacing.
///
/// Read keys: `num_train_timesteps`, `beta_start`, `beta_end`, `beta_schedule` (`linear`,
/// `scaled_linear`, `squaredcos_cap_v2`, and `sigmoid` for DDPM), `trained_betas`,
/// `timestep_spacing` (`leading`, `trailing`, `linspace`), `steps_offset`, `set_alpha_to_one`
/// (DDIM; diffusers' DDPM ignores it), `variance_type` (DDPM: `fixed_small`, `learned_range`;
/// DDIM ignores it). Required: `prediction_type` `epsilon`, `clip_sample` false, `thresholding`
/// false, `rescale_betas_zero_snr` false. Accepted whatever their value (used only when
/// clipping or thresholding): `clip_sample_range`, `sample_max_value`,
/// `dynamic_thresholding_ratio`.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffusersScheduler {
    /// The scheduler class the steps follow.
    pub class: SchedulerClass,
    /// How the betas were made.
    pub beta_schedule: BetaSchedule,
    /// The training schedule over `num_train_timesteps`.
    pub schedule: NoiseSchedule,
    /// `timestep_spacing`.
    pub spacing: Spacing,
    /// `steps_offset` (added to [`Spacing::Leading`] timesteps only, as in diffusers).
    pub steps_offset: usize,
    /// Whether the last step moves to `abar = 1` (else to `abar_0`): DDIM's `set_alpha_to_one`;
    /// always true for DDPM, whose `step` uses `abar = 1` past the first training step whatever
    /// the key says. (foil's EF-DDPM inversion needs `false`: set the field to build its steps.)
    pub set_alpha_to_one: bool,
    /// DDPM's `variance_type`; `None` for DDIM, which has none.
    pub variance_type: Option<VarianceType>,
}

impl DiffusersScheduler {
    /// Reads `scheduler_config.json` at `path`; the class is its `_class_name`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_config(&read_json_file(path)?, &path.display().to_string())
    }

    /// Reads a scheduler configuration whose `_class_name` must be `DDPMScheduler` or
    /// `DDIMScheduler`; `what` names it in errors.
    pub fn from_config(json: &Value, what: &str) -> Result<Self> {
        let class = match json.get("_class_name") {
            Some(Value::String(name)) => SchedulerClass::from_class_name(name),
            _ => None,
        };
        match class {
            Some(class) => Self::from_config_as(json, what, class),
            None => Err(Error::format(
                what.to_string(),
                format!(
                    "key `_class_name`: foil reproduces DDPMScheduler and DDIMScheduler, found {}",
                    json.get("_class_name").unwrap_or(&Value::Null)
                ),
            )),
        }
    }

    /// Reads a scheduler configuration as `class` (as diffusers loads a pipeline's scheduler
    /// folder with the class its `model_index.json` names, ignoring keys of the other class).
    /// A `_class_name`, if present, must still be `DDPMScheduler` or `DDIMScheduler`.
    pub fn from_config_as(json: &Value, what: &str, class: SchedulerClass) -> Result<Self> {
        let mut r = ConfigReader::new(json, what)?;
        if let Some(name) = r.raw("_class_name") {
            let known = name
                .as_str()
                .and_then(SchedulerClass::from_class_name)
                .is_some();
            if !known {
                return Err(r.error(
                    "_class_name",
                    format!("foil reproduces DDPMScheduler and DDIMScheduler, found {name}"),
                ));
            }
        }
        let t = r.usize("num_train_timesteps", 1000)?;
        if t > crate::schedule::MAX_TRAIN_STEPS {
            return Err(r.error(
                "num_train_timesteps",
                format!(
                    "expected 1 to {}, found {t}",
                    crate::schedule::MAX_TRAIN_STEPS
                ),
            ));
        }
        let start = r.f64("beta_start", 0.0001)?;
        let end = r.f64("beta_end", 0.02)?;
        let kind = r.string("beta_schedule", "linear")?;
        let trained = match r.raw("trained_betas") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => {
                let betas = items
                    .iter()
                    .map(|v| v.as_f64())
                    .collect::<Option<Vec<f64>>>()
                    .ok_or_else(|| r.error("trained_betas", "expected a list of numbers"))?;
                Some(betas)
            }
            Some(v) => {
                return Err(r.error(
                    "trained_betas",
                    format!("expected null or a list of numbers, found {v}"),
                ));
            }
        };
        let beta_schedule = match (trained, kind.as_str()) {
            (Some(betas), _) => {
                if betas.len() != t {
                    return Err(r.error(
                        "trained_betas",
                        format!(
                            "expected num_train_timesteps = {t} values, found {}",
                            betas.len()
                        ),
                    ));
                }
                BetaSchedule::Custom(betas)
            }
            (None, "linear") => BetaSchedule::Linear { start, end },
            (None, "scaled_linear") => BetaSchedule::ScaledLinear { start, end },
            // diffusers' betas_for_alpha_bar with its cosine: s = 0.008, clipped at 0.999.
            (None, "squaredcos_cap_v2") => BetaSchedule::cosine(),
            (None, "sigmoid") if class == SchedulerClass::Ddpm => {
                BetaSchedule::Custom(sigmoid_betas(start, end, t))
            }
            (None, other) => {
                return Err(r.error(
                    "beta_schedule",
                    format!(
                        "{} supports linear, scaled_linear, squaredcos_cap_v2{}, found \"{other}\"",
                        class.class_name(),
                        if class == SchedulerClass::Ddpm {
                            ", sigmoid"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        };
        let schedule = NoiseSchedule::new(&beta_schedule, t)
            .map_err(|e| r.error("beta_schedule", format!("{kind:?} betas: {e}")))?;
        let spacing = match r.string("timestep_spacing", "leading")?.as_str() {
            "leading" => Spacing::Leading,
            "trailing" => Spacing::Trailing,
            "linspace" => Spacing::Linspace,
            other => {
                return Err(r.error(
                    "timestep_spacing",
                    format!("foil supports leading, trailing and linspace, found \"{other}\""),
                ));
            }
        };
        let steps_offset = r.usize("steps_offset", 0)?;
        let set_alpha_to_one = r.bool("set_alpha_to_one", true)?;
        let variance = r.raw("variance_type").cloned();
        let variance_type = match class {
            SchedulerClass::Ddim => None,
            SchedulerClass::Ddpm => {
                let name = match &variance {
                    None => "fixed_small",
                    Some(Value::String(s)) => s.as_str(),
                    Some(v) => {
                        return Err(
                            r.error("variance_type", format!("expected a string, found {v}"))
                        );
                    }
                };
                Some(match name {
                    "fixed_small" => VarianceType::FixedSmall,
                    "learned_range" => VarianceType::LearnedRange,
                    other => {
                        return Err(r.error(
                            "variance_type",
                            format!(
                                "foil's steps reproduce DDPMScheduler's fixed_small and \
                                 learned_range, found \"{other}\""
                            ),
                        ));
                    }
                })
            }
        };
        r.require(
            "prediction_type",
            Value::from("epsilon"),
            "foil's steps take epsilon predictions (\"epsilon\")",
        )?;
        // diffusers' default is true: a configuration without the key clips.
        r.one_of(
            "clip_sample",
            Value::Bool(true),
            &[Value::Bool(false)],
            "foil's steps do not clip x0 (false; diffusers' default is true)",
        )?;
        r.require(
            "thresholding",
            Value::Bool(false),
            "foil's steps do not threshold x0 (false)",
        )?;
        r.require(
            "rescale_betas_zero_snr",
            Value::Bool(false),
            "foil does not rescale betas to zero terminal SNR (false)",
        )?;
        r.accept(&[
            "clip_sample_range",
            "sample_max_value",
            "dynamic_thresholding_ratio",
        ]);
        r.finish()?;
        Ok(Self {
            class,
            beta_schedule,
            schedule,
            spacing,
            steps_offset,
            set_alpha_to_one: class == SchedulerClass::Ddpm || set_alpha_to_one,
            variance_type,
        })
    }

    /// The steps of `set_timesteps(num_inference_steps)` ([`Steps::inference`] with this
    /// configuration's spacing, offset and final `abar`).
    pub fn inference_steps(&self, num_inference_steps: usize) -> Result<Steps> {
        Steps::inference(
            &self.schedule,
            num_inference_steps,
            self.spacing,
            self.steps_offset,
            self.set_alpha_to_one,
        )
    }
}

/// DDPMScheduler's `sigmoid` betas: `sigmoid(linspace(-6, 6, n)) * (end - start) + start`.
fn sigmoid_betas(start: f64, end: f64, n: usize) -> Vec<f64> {
    let last = n.saturating_sub(1).max(1) as f64;
    (0..n)
        .map(|i| {
            let x = if n == 1 {
                -6.0
            } else {
                -6.0 + 12.0 * i as f64 / last
            };
            1.0 / (1.0 + (-x).exp()) * (end - start) + start
        })
        .collect()
}
