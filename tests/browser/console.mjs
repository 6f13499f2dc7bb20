// The console's scenarios in Debian's Chromium, driven by playwright-core (run by tests/console.rs,
// which sets up the apiserver, Keycloak, the operator and the console, and checks the cluster
// afterwards). Prints one JSON line of what it saw; any failed expectation exits non-zero.
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(path.join(process.env.MFA_RECALL_NODE_MODULES, "..", "package.json"));
const { chromium } = require("playwright-core");

const CONSOLE = process.env.CONSOLE_URL;
const PASSWORD = process.env.PASSWORD;
const BACKEND = process.env.BACKEND;
const SHOTS = process.env.SHOTS;
const result = {};
const problems = [];
const pages = [];

// On a failure, what each browser page shows, to read in the test's output.
process.on("uncaughtException", async (e) => {
  console.log(`FAILED: ${e.stack || e}`);
  for (const page of pages) {
    try { console.log(`--- ${page.url()}\n${(await page.innerText("body")).slice(0, 2000)}`); } catch (_) { /* closed */ }
  }
  process.exit(1);
});

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

const browser = await chromium.launch({
  executablePath: process.env.MFA_RECALL_CHROMIUM,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

// Keycloak's sign-in form; on a fresh sign-in it may show only the password.
async function keycloakForm(page, person) {
  await page.waitForSelector("#password");
  const username = page.locator("#username");
  if (await username.count() && await username.isEditable()) await username.fill(person);
  await page.fill("#password", PASSWORD);
  await page.click("#kc-login");
}

async function signIn(person) {
  const context = await browser.newContext({ viewport: { width: 1360, height: 860 } });
  const page = await context.newPage();
  pages.push(page);
  page.on("pageerror", (e) => problems.push(`${person}: script error: ${e}`));
  // Content-Security-Policy violations are reported on the console as errors; 403 and 422 are the refusals the scenarios provoke.
  page.on("console", (m) => { if (m.type() === "error" && !/status of (403|422)/.test(m.text())) problems.push(`${person}: console: ${m.text()}`); });
  await page.goto(`${CONSOLE}/`);
  expect(page.url().includes("/realms/"), `${person}: not sent to Keycloak to sign in: ${page.url()}`);
  await keycloakForm(page, person);
  await page.waitForURL(`${CONSOLE}/`);
  await page.waitForSelector(`.me:text-is("oidc:${person}")`);
  return { context, page };
}

async function newRecall(page, { reason, users, approval }) {
  await page.goto(`${CONSOLE}/recalls/new`);
  await page.fill("input[name=reason]", reason);
  await page.check(`input[name=backend][value="${BACKEND}"]`);
  await page.fill("textarea[name=users]", users);
  if (approval) await page.check("input[name=approval]");
  await page.click("#plan-it");
  await page.waitForURL(/\/recalls\/[a-z0-9-]+$/);
  return page.url().split("/").pop();
}

// --- alice signs in; the session cookie cannot be read by scripts nor sent by other sites.
const alice = await signIn("alice");
const cookies = await alice.context.cookies();
const session = cookies.find((c) => c.name === "__Host-mfa-recall-session");
expect(session && session.httpOnly && session.secure && session.sameSite === "Strict", `session cookie: ${JSON.stringify(session)}`);
expect(!(await alice.page.content()).includes(session.value), "the session id is in the page");

// --- a form with a mistake comes back with what to fix and what was typed.
await alice.page.goto(`${CONSOLE}/recalls/new`);
await alice.page.fill("input[name=reason]", "INC-4711 phished admins");
await alice.page.check(`input[name=backend][value="${BACKEND}"]`);
await alice.page.click("#plan-it");
await alice.page.waitForSelector("#form-error");
expect((await alice.page.textContent("#form-error")).includes("Name the users or groups"), "no message saying what to fix");
expect((await alice.page.inputValue("input[name=reason]")) === "INC-4711 phished admins", "the reason typed was lost");

// --- the plan first, then a confirmation; a broad recall asks for the password again.
const first = await newRecall(alice.page, { reason: "INC-4711 phished admins", users: process.env.TARGETS });
result.recall = first;
await alice.page.waitForSelector("#plan-users", { timeout: 60000 });
expect((await alice.page.textContent("#plan-users")).trim() === "40", `the plan shows ${await alice.page.textContent("#plan-users")} users`);
if (SHOTS) await alice.page.screenshot({ path: path.join(SHOTS, "recall-plan.png"), fullPage: true });
// The console runs with --fresh-sign-in 8s: alice's sign-in is older than that by now.
await alice.page.waitForTimeout(8500);
await alice.page.click("#confirm");
await alice.page.waitForURL(/\/realms\//);
result.freshSignIn = alice.page.url().includes("prompt=login") && alice.page.url().includes("max_age=0");
await keycloakForm(alice.page, "alice");
await alice.page.waitForURL(`${CONSOLE}/recalls/${first}`);
// The new sign-in ended the session the browser had.
const renewed = (await alice.context.cookies()).find((c) => c.name === "__Host-mfa-recall-session");
expect(renewed && renewed.value !== session.value, "the fresh sign-in kept the old session id");
result.oldSessionAfterFreshSignIn = (await fetch(`${CONSOLE}/`, { headers: { cookie: `__Host-mfa-recall-session=${session.value}` }, redirect: "manual" })).status;
await alice.page.waitForSelector("#confirm");
await alice.page.click("#confirm");
await alice.page.waitForURL(`${CONSOLE}/recalls/${first}`);
await alice.page.waitForSelector('#live-status:has-text("updated as the operator works")');

// --- counts rise on the page while the recall runs, with no reload.
await alice.page.evaluate(() => { window.stillTheSamePage = true; });
const doneSeen = [];
let shotTaken = false;
for (let i = 0; i < 1200; i++) {
  const done = Number(await alice.page.textContent('dl.facts [data-field="done"]'));
  if (doneSeen.length === 0 || doneSeen[doneSeen.length - 1] !== done) doneSeen.push(done);
  if (SHOTS && !shotTaken && done > 10 && done < 40) {
    await alice.page.screenshot({ path: path.join(SHOTS, "recall-running.png"), fullPage: true });
    shotTaken = true;
  }
  if (done >= 40) break;
  await alice.page.waitForTimeout(100);
}
result.doneSeen = doneSeen;
result.reloaded = !(await alice.page.evaluate(() => window.stillTheSamePage === true));
result.rate = await alice.page.textContent('dl.facts [data-field="rate"]');
if (SHOTS) {
  await alice.page.goto(`${CONSOLE}/`);
  await alice.page.waitForSelector('#live-status:has-text("updated as the operator works")');
  await alice.page.screenshot({ path: path.join(SHOTS, "recalls.png"), fullPage: true });
}

// --- a recall that needs a second person: alice cannot approve her own; bob does.
const second = await newRecall(alice.page, { reason: "INC-4712 one laptop stolen", users: process.env.APPROVAL_TARGETS, approval: true });
result.approvalRecall = second;
await alice.page.waitForSelector("#confirm", { timeout: 60000 });
await alice.page.click("#confirm");
await alice.page.waitForSelector('text=You requested this recall', { timeout: 60000 });
expect((await alice.page.locator("#approve").count()) === 0, "alice is offered to approve her own recall");
const bob = await signIn("bob");
await bob.page.goto(`${CONSOLE}/approvals`);
await bob.page.waitForSelector(`a[href="/recalls/${second}"]`);
if (SHOTS) await bob.page.screenshot({ path: path.join(SHOTS, "approvals.png"), fullPage: true });
await bob.page.click(`a[href="/recalls/${second}"]`);
await bob.page.click("#approve");
await bob.page.waitForURL(`${CONSOLE}/recalls/${second}`);
await bob.page.waitForSelector('dl.facts [data-field="approvedBy"]:text-is("oidc:bob")');

// --- a bypass: alice requests it, bob approves it.
await alice.page.goto(`${CONSOLE}/bypasses`);
await alice.page.fill("input[name=recall]", first);
await alice.page.fill("input[name=backend]", BACKEND);
await alice.page.fill("input[name=user]", process.env.BYPASS_USER);
await alice.page.fill("input[name=lifetime]", "30m");
await alice.page.fill("input[name=reason]", "lost phone, verified by video call");
await alice.page.click("#request-bypass");
await alice.page.waitForSelector("text=awaiting a second person");
await bob.page.goto(`${CONSOLE}/bypasses`);
await bob.page.click('#bypasses button:has-text("Approve")');
await bob.page.waitForSelector('#bypasses td:text-is("oidc:bob")');
if (SHOTS) await bob.page.screenshot({ path: path.join(SHOTS, "bypasses.png"), fullPage: true });

// --- carol may look but not recall: the apiserver's refusal is a 403 page, and nothing is created.
const carol = await signIn("carol");
await carol.page.goto(`${CONSOLE}/recalls/new`);
await carol.page.fill("input[name=reason]", "carol tries");
await carol.page.check(`input[name=backend][value="${BACKEND}"]`);
await carol.page.fill("textarea[name=users]", "someone");
const [refusal] = await Promise.all([carol.page.waitForResponse((r) => r.url() === `${CONSOLE}/recalls` && r.request().method() === "POST"), carol.page.click("#plan-it")]);
result.carolStatus = refusal.status();
await carol.page.waitForSelector("h1.error-title:has-text('Not allowed')");

// --- the policies page and a signed-out visitor.
await alice.page.goto(`${CONSOLE}/policies`);
await alice.page.waitForSelector("text=No policies.");
await alice.page.click("header .who button");
await alice.page.waitForSelector("text=Signed out.");
// The session is gone on the server too, not only its cookie in this browser.
const replay = await fetch(`${CONSOLE}/`, { headers: { cookie: `__Host-mfa-recall-session=${renewed.value}` }, redirect: "manual" });
expect(replay.status === 303 && replay.headers.get("location").startsWith("/auth/login"), `a signed-out session still works: ${replay.status}`);

await browser.close();
expect(problems.length === 0, `problems in the pages: ${problems.join("; ")}`);
console.log(JSON.stringify(result));
