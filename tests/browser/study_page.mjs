// Checks a foil study page in Debian's headless Chromium through playwright-core.
//
//   node tests/browser/study_page.mjs STUDY_DIR ARTIFACT_DIR
//
// STUDY_DIR holds index.html and study.json (written by foil::teach); screenshots and the
// exported answers go to ARTIFACT_DIR. Checks: the page loads with no console error and every
// image loads (masks included, shown on their card); a slider changes the shown frame; a scripted quiz run (every answer right but
// the first two) shows and exports the expected score. Exits non-zero with a message on failure.
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [studyDir, artifacts] = process.argv.slice(2);
if (!studyDir || !artifacts) {
  console.error("usage: study_page.mjs STUDY_DIR ARTIFACT_DIR");
  process.exit(2);
}
fs.mkdirSync(artifacts, { recursive: true });
const data = JSON.parse(fs.readFileSync(path.join(studyDir, "study.json"), "utf8"));
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
  console.log("ok - " + what);
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--allow-file-access-from-files"],
});
let failed = null;
try {
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1100, height: 800 } });
  const page = await context.newPage();
  const errors = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("requestfailed", (r) => errors.push("request failed: " + r.url()));
  await page.goto(pathToFileURL(path.resolve(studyDir, "index.html")).href);
  await page.waitForLoadState("load");

  // Gallery: one card per item, every image decoded.
  const cards = await page.locator("[data-testid^=card-]").count();
  check(cards === data.items.length, `gallery shows ${data.items.length} cards (found ${cards})`);
  const broken = await page.evaluate(() =>
    [...document.images].filter((i) => !i.classList.contains("hidden") && i.getAttribute("src") &&
      !(i.complete && i.naturalWidth > 0)).map((i) => i.getAttribute("src")));
  check(broken.length === 0, "every shown image loads " + JSON.stringify(broken));
  // The method's masks (MaskDiME's M1, M2) show on their card.
  const masked = data.items.find((i) => i.masks && i.masks.length);
  if (masked) {
    const shown = await page.getByTestId("masks-" + masked.key).locator("img").count();
    check(shown === masked.masks.length, `the masks of ${masked.key} show (${shown})`);
  }
  await page.screenshot({ path: path.join(artifacts, "gallery.png"), fullPage: true });

  // The slider scrubs the frames.
  const item = data.items[0];
  const frame = page.getByTestId("frame-" + item.key);
  const last = item.frames.length - 1;
  check((await frame.getAttribute("src")) === item.frames[0], "the first frame is the original");
  await page.getByTestId("slider-" + item.key).fill(String(last));
  check((await frame.getAttribute("src")) === item.frames[last],
    "moving the slider to the end shows the counterfactual frame");
  check((await frame.getAttribute("data-frame")) === String(last), "the frame index follows");
  const mid = Math.floor(last / 2);
  await page.getByTestId("slider-" + item.key).fill(String(mid));
  check((await frame.getAttribute("src")) === item.frames[mid], "and back to a middle frame");
  check(await frame.evaluate((i) => i.complete && i.naturalWidth > 0), "the middle frame loads");
  await page.screenshot({ path: path.join(artifacts, "slider.png") });

  // The study protocol: the timer runs, then the quiz.
  await page.getByTestId("start-study").click();
  const t0 = await page.getByTestId("timer").textContent();
  check(/^\d+:\d\d$/.test(t0), "the study timer shows " + t0);
  await page.waitForTimeout(1200);
  const t1 = await page.getByTestId("timer").textContent();
  check(t1 !== t0, `the timer counts down (${t0} -> ${t1})`);
  await page.getByTestId("skip-study").click();
  check(await page.getByTestId("quiz").isVisible(), "the quiz starts");
  check(!(await page.getByTestId("gallery").isVisible()), "the gallery is hidden during the quiz");
  const classes = data.settings.classes;
  const n = data.quiz.length;
  for (let i = 0; i < n; i++) {
    const src = await page.getByTestId("quiz-image").getAttribute("src");
    check(src === data.quiz[i].image, `question ${i + 1} shows ${src}`);
    const truth = classes.indexOf(data.quiz[i].class);
    const pick = i < 2 ? 1 - truth : truth; // the first two wrong
    await page.getByTestId("answer-" + pick).click();
  }
  const expected = `Score: ${n - 2} / ${n} (${Math.round((100 * (n - 2)) / n)}%)`;
  const score = await page.getByTestId("score").textContent();
  check(score === expected, `the score reads "${expected}" (found "${score}")`);
  await page.screenshot({ path: path.join(artifacts, "score.png") });
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByTestId("export").click(),
  ]);
  const exported = path.join(artifacts, "answers.json");
  await download.saveAs(exported);
  const answers = JSON.parse(fs.readFileSync(exported, "utf8"));
  check(answers.answers.length === n, "the export holds every answer");
  check(answers.answers.filter((a) => a.correct).length === n - 2, "with n - 2 right");
  check(Math.abs(answers.score - (n - 2) / n) < 1e-12, "and the score");
  check(answers.answers.every((a, i) => a.truth === data.quiz[i].class), "and the true classes");
  check(errors.length === 0, "no console error " + JSON.stringify(errors));
} catch (e) {
  failed = e;
} finally {
  await browser.close();
}
if (failed) {
  console.error(String(failed && failed.stack || failed));
  process.exit(1);
}
console.log("study page: all checks passed");
