//! `foil_core::Error`: every variant's kind, subject, path and exact message.

use std::borrow::Cow;
use std::path::Path;

use foil_core::{Error, ErrorKind};

#[test]
fn shape_kind_subject_and_message() {
    let err = Error::shape("noise", "[2, 3, 64, 64]", "[2, 3, 32, 32]");
    assert_eq!(err.kind(), ErrorKind::Shape);
    assert_eq!(err.subject(), Some("noise"));
    assert_eq!(err.path(), None);
    assert_eq!(
        err.to_string(),
        "noise: expected shape [2, 3, 64, 64], found [2, 3, 32, 32]"
    );
    assert!(matches!(&err, Error::Shape { what, .. } if what == "noise"));
}

#[test]
fn out_of_range_kind_subject_and_message() {
    let err = Error::out_of_range("batch size", ">= 1", 0);
    assert_eq!(err.kind(), ErrorKind::OutOfRange);
    assert_eq!(err.subject(), Some("batch size"));
    assert_eq!(err.path(), None);
    assert_eq!(err.to_string(), "batch size must be >= 1, found 0");
    assert!(matches!(&err, Error::OutOfRange { what, .. } if what == "batch size"));
}

#[test]
fn non_finite_kind_subject_and_message() {
    let err = Error::non_finite("latents", "at step 41");
    assert_eq!(err.kind(), ErrorKind::NonFinite);
    assert_eq!(err.subject(), Some("latents"));
    assert_eq!(err.path(), None);
    assert_eq!(
        err.to_string(),
        "latents holds non-finite values (NaN or infinity) at step 41"
    );

    let bare = Error::non_finite("loss", "");
    assert_eq!(
        bare.to_string(),
        "loss holds non-finite values (NaN or infinity)"
    );
}

#[test]
fn empty_kind_subject_and_message() {
    let err = Error::Empty {
        what: "seeds".into(),
        hint: "pass at least one seed".into(),
    };
    assert_eq!(err.kind(), ErrorKind::Empty);
    assert_eq!(err.subject(), Some("seeds"));
    assert_eq!(err.path(), None);
    assert_eq!(err.to_string(), "seeds is empty: pass at least one seed");
}

#[test]
fn io_kind_path_and_message() {
    let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
    let err = Error::io("weights/unet.safetensors", source);
    assert_eq!(err.kind(), ErrorKind::Io);
    assert_eq!(err.subject(), None);
    assert_eq!(err.path(), Some(Path::new("weights/unet.safetensors")));
    assert_eq!(err.to_string(), "weights/unet.safetensors: no such file");
}

#[test]
fn image_kind_path_and_message() {
    let source = image::ImageError::IoError(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "truncated",
    ));
    let err = Error::Image {
        path: "out/0.png".into(),
        source,
    };
    assert_eq!(err.kind(), ErrorKind::Image);
    assert_eq!(err.subject(), None);
    assert_eq!(err.path(), Some(Path::new("out/0.png")));
    assert_eq!(err.to_string(), "image out/0.png: truncated");
}

#[test]
fn format_kind_subject_and_message() {
    let err = Error::format("unet.safetensors", "missing tensor conv_in.weight");
    assert_eq!(err.kind(), ErrorKind::Format);
    assert_eq!(err.subject(), Some("unet.safetensors"));
    assert_eq!(err.path(), None);
    assert_eq!(
        err.to_string(),
        "unet.safetensors: missing tensor conv_in.weight"
    );
}

#[test]
fn backend_kind_subject_and_message() {
    let err = Error::Backend {
        backend: "cuda".into(),
        reason: "no CUDA driver".into(),
    };
    assert_eq!(err.kind(), ErrorKind::Backend);
    assert_eq!(err.subject(), Some("cuda"));
    assert_eq!(err.path(), None);
    assert_eq!(err.to_string(), "backend cuda unavailable: no CUDA driver");
    assert!(matches!(&err, Error::Backend { backend, .. } if backend == "cuda"));
}

#[test]
fn static_subject_is_borrowed() {
    let err = Error::out_of_range("batch size", ">= 1", 0);
    assert!(matches!(
        err,
        Error::OutOfRange {
            what: Cow::Borrowed("batch size"),
            ..
        }
    ));
}

#[test]
fn string_subject_works_too() {
    let layer = 3;
    let name = format!("layer {layer} weight");
    let err = Error::shape(name.clone(), "[64, 3]", "[64, 4]");
    assert_eq!(err.kind(), ErrorKind::Shape);
    assert_eq!(err.subject(), Some(name.as_str()));
    assert_eq!(
        err.to_string(),
        "layer 3 weight: expected shape [64, 3], found [64, 4]"
    );

    let err = Error::out_of_range(String::from("guidance scale"), "> 0", -1.5);
    assert_eq!(err.subject(), Some("guidance scale"));
    assert_eq!(err.to_string(), "guidance scale must be > 0, found -1.5");

    let err = Error::non_finite(String::from("gradient"), String::from("at step 7"));
    assert_eq!(err.subject(), Some("gradient"));
    assert_eq!(
        err.to_string(),
        "gradient holds non-finite values (NaN or infinity) at step 7"
    );

    let err = Error::format(name, "bad dtype");
    assert_eq!(err.kind(), ErrorKind::Format);
    assert_eq!(err.subject(), Some("layer 3 weight"));
    assert!(matches!(
        &err,
        Error::Format {
            what: Cow::Owned(_),
            ..
        }
    ));
    assert_eq!(err.to_string(), "layer 3 weight: bad dtype");
}

#[test]
fn kinds_are_distinct() {
    let kinds = [
        ErrorKind::Shape,
        ErrorKind::OutOfRange,
        ErrorKind::NonFinite,
        ErrorKind::Empty,
        ErrorKind::Io,
        ErrorKind::Image,
        ErrorKind::Format,
        ErrorKind::Backend,
    ];
    for (i, a) in kinds.iter().enumerate() {
        for (j, b) in kinds.iter().enumerate() {
            assert_eq!(a == b, i == j, "{a:?} vs {b:?}");
        }
    }
}
