//! Integration tests of foil-models, in one binary (one link, one set of monomorphised kernels).

mod adm;
mod classifiers;
mod clip;
mod densenet;
mod dime_classifier;
mod ensemble;
mod gpu;
mod hub;
mod inception;
mod kandinsky_movq;
mod kandinsky_unet;
mod lora;
mod numpy_pickle;
mod torchvision_oracle;
mod vgg19;
mod weight_files;
mod weights;
