//! The teaching material: transitions render as frames, a looping GIF, a strip and a heat
//! map; the study page embeds its data safely and refuses an uneven quiz; and the page works
//! in a real headless browser (Debian's chromium through playwright-core,
//! `tests/browser/study_page.mjs`): run when `FOIL_BROWSER_TESTS=1` (CI sets it and installs
//! both), skipped with a message otherwise.

use crate::common;

use std::path::Path;
use std::process::Command;

use foil::teach::{
    FrameSource, Mask, QuizImage, StudyData, StudySettings, Transition, render_transition,
    write_study_page,
};
use image::{AnimationDecoder, GrayImage, Luma, RgbImage};

fn temp_dir(tag: &str) -> tempfile::TempDir {
    common::temp_dir("teach", tag)
}

/// `n` kiki / bouba images of each class, 16 px RGB.
fn shapes(n: usize) -> (Vec<RgbImage>, Vec<RgbImage>) {
    let data = foil::data::procedural::kiki_bouba(n, 16, 7).unwrap();
    let mut by_class = (Vec::new(), Vec::new());
    for i in 0..data.len() {
        let (x, labels) = data
            .tensors::<burn::backend::Flex>(
                &[i],
                foil::core::image_io::ColorMode::Rgb,
                foil::core::image_io::Resize::Keep,
                &Default::default(),
            )
            .unwrap();
        let img = foil::core::image_io::tensor_to_images(&x).unwrap()[0].to_rgb8();
        if data.class_names()[labels[0]] == "bouba" {
            by_class.0.push(img);
        } else {
            by_class.1.push(img);
        }
    }
    by_class
}

fn settings() -> StudySettings {
    StudySettings {
        title: "bouba or kiki? </script><b>".into(),
        classes: ["bouba".into(), "kiki".into()],
        study_seconds: 30,
        display_px: 96,
    }
}

/// A 16 px mask, white on the left `cols` columns.
fn mask(name: &str, cols: u32) -> Mask {
    Mask {
        name: name.into(),
        image: GrayImage::from_fn(16, 16, |x, _| Luma([if x < cols { 255 } else { 0 }])),
    }
}

/// A study folder: 3 transitions (the first with MaskDiME-like masks M1, M2), 6 quiz images.
fn build(dir: &Path) -> StudyData {
    let (bouba, kiki) = shapes(6);
    let mut items = Vec::new();
    for i in 0..3 {
        let (from, to, a, b) = if i % 2 == 0 {
            ("bouba", "kiki", &bouba[i], &kiki[i])
        } else {
            ("kiki", "bouba", &kiki[i], &bouba[i])
        };
        let mut t =
            Transition::cross_fade(format!("item{i}"), (from, to), i != 2, a, b, 5).unwrap();
        if i == 0 {
            t = t.with_masks(vec![mask("M1", 8), mask("M2", 4)]);
        }
        items.push(render_transition(dir, &t, 100).unwrap());
    }
    let quiz: Vec<QuizImage> = (3..6)
        .flat_map(|i| {
            [
                QuizImage {
                    image: bouba[i].clone(),
                    class: "bouba".into(),
                },
                QuizImage {
                    image: kiki[i].clone(),
                    class: "kiki".into(),
                },
            ]
        })
        .collect();
    write_study_page(dir, &settings(), items, &quiz).unwrap();
    serde_json::from_slice(&std::fs::read(dir.join("study.json")).unwrap()).unwrap()
}

#[test]
fn transitions_render_frames_gif_strip_and_heat_map() {
    let tmp = temp_dir("render");
    let dir = tmp.path();
    let (bouba, kiki) = shapes(1);
    let t = Transition::cross_fade("x", ("bouba", "kiki"), true, &bouba[0], &kiki[0], 6).unwrap();
    assert_eq!(t.source, FrameSource::CrossFade);
    assert_eq!(t.frames[0], bouba[0]);
    assert_eq!(t.frames[5], kiki[0]);
    let item = render_transition(dir, &t, 80).unwrap();
    assert_eq!(item.frames.len(), 6);
    for (i, f) in item.frames.iter().enumerate() {
        assert_eq!(image::open(dir.join(f)).unwrap().to_rgb8(), t.frames[i]);
    }
    // The GIF goes forth and back: 6 + 4 frames, the ends held longer.
    let gif = image::codecs::gif::GifDecoder::new(std::io::BufReader::new(
        std::fs::File::open(dir.join(&item.gif)).unwrap(),
    ))
    .unwrap();
    let frames = gif.into_frames().collect_frames().unwrap();
    assert_eq!(frames.len(), 10);
    let ms = |i: usize| {
        let (n, d) = frames[i].delay().numer_denom_ms();
        n / d
    };
    assert_eq!((ms(0), ms(1), ms(5)), (240, 80, 240));
    let strip = image::open(dir.join(&item.strip)).unwrap();
    assert_eq!((strip.width(), strip.height()), (7 * 16 + 6 * 2, 16));
    let heat = image::open(dir.join(&item.heat)).unwrap().to_rgb8();
    assert_eq!(heat.dimensions(), (16, 16));
    // Where the two shapes agree the heat map is black.
    let same = bouba[0]
        .pixels()
        .zip(kiki[0].pixels())
        .position(|(a, b)| a == b)
        .unwrap();
    assert_eq!(heat.pixels().nth(same).unwrap().0, [0, 0, 0]);
    assert!(item.masks.is_empty());
    // Masks are saved as gray PNGs, follow the heat map in the strip, and carry their share.
    let masked = t.clone().with_masks(vec![mask("M1", 8), mask("M2", 4)]);
    let item = render_transition(dir, &masked, 80).unwrap();
    assert_eq!(item.masks.len(), 2);
    assert_eq!(
        (item.masks[0].name.as_str(), item.masks[0].share),
        ("M1", 0.5)
    );
    assert_eq!(item.masks[1].share, 0.25);
    let m2 = image::open(dir.join(&item.masks[1].image)).unwrap();
    assert_eq!(m2.color(), image::ColorType::L8);
    assert_eq!(m2.to_luma8(), mask("M2", 4).image);
    let strip = image::open(dir.join(&item.strip)).unwrap().to_rgb8();
    assert_eq!(strip.dimensions(), (9 * 16 + 8 * 2, 16));
    assert_eq!(strip.get_pixel(8 * 18 + 3, 0).0, [255; 3]);
    assert_eq!(strip.get_pixel(8 * 18 + 4, 0).0, [0; 3]);
    // A mask of another size, or a name that is no file name, is refused.
    let bad = Mask {
        name: "M1".into(),
        image: GrayImage::new(8, 8),
    };
    let err = render_transition(dir, &t.clone().with_masks(vec![bad]), 80).unwrap_err();
    assert!(err.to_string().contains("mask M1"), "{err}");
    let err = render_transition(dir, &t.clone().with_masks(vec![mask("../x", 1)]), 80).unwrap_err();
    assert!(err.to_string().contains("../x"), "{err}");
    // One frame is not a transition; frames of two sizes are refused.
    assert!(Transition::cross_fade("y", ("a", "b"), true, &bouba[0], &kiki[0], 1).is_err());
    let small = RgbImage::new(8, 8);
    assert!(Transition::cross_fade("y", ("a", "b"), true, &bouba[0], &small, 3).is_err());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_page_embeds_its_data_and_refuses_an_uneven_quiz() {
    let tmp = temp_dir("page");
    let dir = tmp.path();
    let data = build(dir);
    assert_eq!(data.items.len(), 3);
    assert_eq!(data.quiz.len(), 6);
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    // The title is escaped and the inline JSON cannot close its script element.
    assert!(html.contains("<title>bouba or kiki? &lt;/script&gt;&lt;b&gt;</title>"));
    let start = html
        .find(r#"<script id="study-data" type="application/json">"#)
        .unwrap();
    let inline = &html[start..];
    let inline = &inline[inline.find('>').unwrap() + 1..inline.find("</script>").unwrap()];
    let parsed: StudyData = serde_json::from_str(&inline.replace("<\\/", "</")).unwrap();
    assert_eq!(parsed, data);
    // Every path the page refers to exists, the masks' too.
    assert_eq!(data.items[0].masks.len(), 2);
    assert!(data.items[1].masks.is_empty());
    assert!(html.contains("item.masks"));
    for item in &data.items {
        for p in item
            .frames
            .iter()
            .chain([&item.gif, &item.strip, &item.heat])
            .chain(item.masks.iter().map(|m| &m.image))
        {
            assert!(dir.join(p).exists(), "{p}");
        }
    }
    for q in &data.quiz {
        assert!(dir.join(&q.image).exists());
    }
    // Uneven quizzes and foreign classes are errors.
    let (bouba, _) = shapes(2);
    let uneven = vec![QuizImage {
        image: bouba[0].clone(),
        class: "bouba".into(),
    }];
    let err = write_study_page(dir, &settings(), vec![], &uneven)
        .unwrap_err()
        .to_string();
    assert!(err.contains("evenly split"), "{err}");
    let mut foreign = data.items[0].clone();
    foreign.to = "blob".into();
    let err = write_study_page(dir, &settings(), vec![foreign], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("blob"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_page_works_in_headless_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/browser/study_page.mjs");
    let ready = root
        .join("tests/browser/node_modules/playwright-core")
        .exists()
        && Path::new("/usr/bin/chromium").exists();
    if std::env::var("FOIL_BROWSER_TESTS").as_deref() != Ok("1") {
        if !ready {
            eprintln!(
                "skipped: set FOIL_BROWSER_TESTS=1 after `apt install chromium` and \
                 `npm ci --prefix tests/browser`"
            );
            return;
        }
    } else {
        assert!(
            ready,
            "FOIL_BROWSER_TESTS=1 but chromium or tests/browser/node_modules is missing"
        );
    }
    let tmp = temp_dir("browser");
    let dir = tmp.path();
    build(dir);
    let artifacts = root.join("target/browser-artifacts");
    let out = Command::new("node")
        .arg(&script)
        .arg(dir)
        .arg(&artifacts)
        .output()
        .expect("node runs");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{log}");
    assert!(out.status.success(), "browser checks failed:\n{log}");
    assert!(log.contains("all checks passed"));
    assert!(artifacts.join("score.png").exists());
    let _ = std::fs::remove_dir_all(dir);
}
