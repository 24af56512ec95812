// YTEMPIRE console: log in, estimate and submit video jobs, follow them, play,
// download and cancel them. Plain JavaScript, no framework, no build step.
// Relative URLs only: the host's nginx routes /api/ (and /health) to the API.
// The token lives in sessionStorage (gone when the tab closes); every /api
// request sends it, and a 401 from any of them ends the session.
"use strict";

const POLL_MS = 2000;
const ESTIMATE_DELAY_MS = 400;
const ACTIVE = new Set(["queued", "running"]);
const TOKEN_KEY = "ytempire.token";
const USER_KEY = "ytempire.user";

const $ = (id) => document.getElementById(id);

const state = {
  pollTimer: null,
  estimateTimer: null,
  estimateSeq: 0,
  images: Promise.resolve([]),
  rows: new Map(),
  objectUrl: null,
};

// ---------------------------------------------------------------- requests

class SessionEnded extends Error {}

function cleanField(field) {
  return String(field || "").replace(/^body\./, "") || "request";
}

function errorText(body, status) {
  const parts = [];
  if (body && typeof body.detail === "string" && body.detail !== "invalid request") {
    parts.push(body.detail);
  }
  if (body && Array.isArray(body.errors)) {
    for (const e of body.errors) parts.push(`${cleanField(e.field)}: ${e.message}`);
  }
  if (!parts.length && body && typeof body.detail === "string") parts.push(body.detail);
  return parts.length ? parts.join("; ") : `HTTP ${status}`;
}

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

// An /api request with the session's token. Resolves to {response, body}
// (body: parsed JSON, or the Blob when options.blob); throws SessionEnded
// after a 401 (the login form is back), or an Error when the API is unreachable.
async function api(path, options = {}) {
  const headers = { Accept: options.blob ? "video/mp4" : "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method: options.method || "GET", headers, cache: "no-store" };
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.json);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new Error(`API unreachable (${err.message})`);
  }
  if (response.status === 401) {
    const body = await readJson(response);
    endSession(`Your session has ended (${errorText(body, 401)}). Log in again.`);
    throw new SessionEnded("session ended");
  }
  if (options.blob && response.ok) return { response, body: await response.blob() };
  return { response, body: await readJson(response) };
}

// Runs an action; shows its failure as text in `box` (a 401 is shown on the login form).
async function guarded(box, action) {
  try {
    box.textContent = "";
    await action();
  } catch (err) {
    if (!(err instanceof SessionEnded)) box.textContent = err.message;
  }
}

// ------------------------------------------------------------------ health

async function refreshHealth() {
  const box = $("health");
  try {
    const response = await fetch("/health", { cache: "no-store" });
    const body = await readJson(response);
    const status = body && body.status ? body.status : response.ok ? "healthy" : "unhealthy";
    box.dataset.state = status;
    let text = status;
    if (body && body.checks) {
      const failing = Object.entries(body.checks).filter(([, v]) => v !== "healthy");
      if (failing.length) text += ` (${failing.map(([k, v]) => `${k}: ${v}`).join(", ")})`;
    }
    $("health-status").textContent = text;
  } catch (err) {
    box.dataset.state = "unreachable";
    $("health-status").textContent = `unreachable (${err.message})`;
  }
}

// ----------------------------------------------------------------- session

function showConsole() {
  $("login").hidden = true;
  $("console").hidden = false;
  $("session").hidden = false;
  $("session-user").textContent = sessionStorage.getItem(USER_KEY) || "";
  loadJobs();
  scheduleEstimate();
}

function endSession(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(USER_KEY);
  clearTimeout(state.pollTimer);
  clearTimeout(state.estimateTimer);
  state.pollTimer = state.estimateTimer = null;
  state.estimateSeq += 1; // answers still in flight are ignored
  closePlayer();
  state.rows.clear();
  $("jobs-body").replaceChildren();
  for (const id of ["form-error", "form-result", "jobs-error", "jobs-state"]) $(id).textContent = "";
  $("console").hidden = true;
  $("session").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("password").value = "";
  $("username").focus();
}

async function login(event) {
  event.preventDefault();
  const form = event.target;
  const button = $("login-submit");
  const username = form.username.value.trim();
  $("login-error").textContent = "";
  button.disabled = true;
  try {
    let response;
    try {
      response = await fetch("/api/auth/login", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ username, password: form.password.value }),
      });
    } catch (err) {
      throw new Error(`API unreachable (${err.message})`);
    }
    const body = await readJson(response);
    if (!response.ok || !body || typeof body.access_token !== "string") {
      throw new Error(`Login failed: ${errorText(body, response.status)}`);
    }
    sessionStorage.setItem(TOKEN_KEY, body.access_token);
    sessionStorage.setItem(USER_KEY, username);
    form.password.value = "";
    showConsole();
  } catch (err) {
    $("login-error").textContent = err.message;
  } finally {
    button.disabled = false;
  }
}

// --------------------------------------------------------- generate a video

function dollars(value) {
  const number = Number(value);
  return value !== null && value !== undefined && Number.isFinite(number)
    ? `$${number.toFixed(4)}`
    : "—";
}

function readImage(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*;base64,/, ""));
    reader.onerror = () => reject(new Error(`could not read ${file.name}: ${reader.error}`));
    reader.readAsDataURL(file);
  });
}

function onImagesChange(event) {
  state.images = Promise.all(Array.from(event.target.files, readImage));
  state.images.catch(() => {}); // shown when the payload is built
}

async function payload() {
  const form = $("generate");
  const duration = form.duration.value.trim();
  return {
    title: form.title.value.trim(),
    script: form.script.value,
    images: await state.images,
    resolution: form.resolution.value,
    duration: duration === "" ? null : Number(duration),
  };
}

function markInvalid(body) {
  const form = $("generate");
  const bad = new Set(
    body && Array.isArray(body.errors) ? body.errors.map((e) => cleanField(e.field).split(".")[0]) : [],
  );
  for (const name of ["title", "script", "images", "resolution", "duration"]) {
    if (bad.has(name)) form[name].setAttribute("aria-invalid", "true");
    else form[name].removeAttribute("aria-invalid");
  }
}

function showEstimate(text, kind) {
  const box = $("estimate");
  box.textContent = text;
  box.dataset.state = kind;
}

function estimateText(estimate) {
  return (
    `${dollars(estimate.total_dollars)} (narration ${dollars(estimate.narration_dollars)}` +
    `${estimate.narration_provider ? ` by ${estimate.narration_provider}` : ""}, ` +
    `rendering ${dollars(estimate.compute_dollars)}; cap ${dollars(estimate.cap_dollars)})`
  );
}

function scheduleEstimate() {
  clearTimeout(state.estimateTimer);
  state.estimateSeq += 1; // the answer to an older form is stale
  showEstimate("…", "pending");
  state.estimateTimer = setTimeout(estimate, ESTIMATE_DELAY_MS);
}

// The cost of the form as it is now: POST generate?dry_run=true stores nothing.
async function estimate() {
  const seq = ++state.estimateSeq;
  const form = $("generate");
  if (!form.title.value.trim() || !form.script.value.trim()) {
    showEstimate("— (enter a title and a script)", "incomplete");
    markInvalid(null);
    return;
  }
  try {
    const body = await payload();
    const answer = await api("/api/videos/generate?dry_run=true", { method: "POST", json: body });
    if (seq !== state.estimateSeq) return;
    markInvalid(answer.body);
    if (answer.response.ok && answer.body && answer.body.estimate) {
      showEstimate(estimateText(answer.body.estimate), "ok");
      $("form-error").textContent = "";
    } else {
      showEstimate("— (the request is not valid)", "invalid");
      $("form-error").textContent = errorText(answer.body, answer.response.status);
    }
  } catch (err) {
    if (err instanceof SessionEnded || seq !== state.estimateSeq) return;
    showEstimate("— (not available)", "error");
    $("form-error").textContent = err.message;
  }
}

async function submit(event) {
  event.preventDefault();
  const button = $("submit");
  $("form-result").textContent = "";
  button.disabled = true;
  await guarded($("form-error"), async () => {
    const body = await payload();
    const { response, body: answer } = await api("/api/videos/generate", {
      method: "POST",
      json: body,
    });
    markInvalid(answer);
    if (response.status !== 202) throw new Error(errorText(answer, response.status));
    const cost = answer.estimate ? `, estimated ${dollars(answer.estimate.total_dollars)}` : "";
    $("form-result").textContent = `Job ${answer.id} is ${answer.status}${cost}.`;
    await loadJobs();
  });
  button.disabled = false;
}

// -------------------------------------------------------------------- jobs

function statusText(job) {
  if (job.status === "failed" && job.failure) {
    return `failed (${job.failure.stage || "unknown stage"}: ${job.failure.reason || "no reason"})`;
  }
  return job.status;
}

function costText(job) {
  if (job.cost_dollars !== null && job.cost_dollars !== undefined) return dollars(job.cost_dollars);
  const estimate = job.estimated_cost_dollars;
  if (estimate === null || estimate === undefined) return "—";
  return ACTIVE.has(job.status)
    ? `${dollars(estimate)} (estimate)`
    : `— (estimated ${dollars(estimate)})`;
}

function actionButton(label, className, job, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = `inline ${className}`;
  button.textContent = label;
  button.setAttribute("aria-label", `${label}: ${job.title || job.id}`);
  button.addEventListener("click", () => onClick(job.id, button));
  return button;
}

function newRow(job) {
  const row = document.createElement("tr");
  row.dataset.id = job.id;
  for (const name of ["title", "status", "cost", "actions"]) {
    const cell = document.createElement("td");
    cell.className = name;
    row.append(cell);
  }
  return row;
}

function updateRow(row, job) {
  const [title, status, cost, actions] = row.children;
  title.textContent = job.title || job.id;
  title.title = job.id;
  status.textContent = statusText(job);
  cost.textContent = costText(job);
  if (row.dataset.status === job.status) return; // keep the buttons (and focus) as they are
  row.dataset.status = job.status;
  status.dataset.status = job.status;
  actions.replaceChildren();
  if (ACTIVE.has(job.status)) actions.append(actionButton("Cancel", "cancel", job, cancelJob));
  if (job.status === "completed") {
    actions.append(actionButton("Play / download", "open", job, openVideo));
  }
}

function renderJobs(jobs) {
  const body = $("jobs-body");
  const seen = new Set();
  jobs.forEach((job, index) => {
    seen.add(job.id);
    let row = state.rows.get(job.id);
    if (!row) {
      row = newRow(job);
      state.rows.set(job.id, row);
    }
    updateRow(row, job);
    if (body.children[index] !== row) body.insertBefore(row, body.children[index] || null);
  });
  for (const [id, row] of state.rows) {
    if (!seen.has(id)) {
      row.remove();
      state.rows.delete(id);
    }
  }
  $("jobs-empty").hidden = jobs.length > 0;
}

// Reads the list; polls again in POLL_MS while a job is queued or running.
async function loadJobs() {
  clearTimeout(state.pollTimer);
  state.pollTimer = null;
  let again = false;
  try {
    const { response, body } = await api("/api/videos?limit=50");
    if (!response.ok || !body || !Array.isArray(body.videos)) {
      throw new Error(`Could not list the jobs: ${errorText(body, response.status)}`);
    }
    renderJobs(body.videos);
    $("jobs-error").textContent = "";
    again = body.videos.some((job) => ACTIVE.has(job.status));
    $("jobs-state").textContent = again
      ? "Updating every 2 seconds while a job is queued or running."
      : `Updated ${new Date().toLocaleTimeString()}.`;
  } catch (err) {
    if (err instanceof SessionEnded) return;
    $("jobs-error").textContent = `${err.message}; retrying`;
    again = true;
  }
  if (again && !$("console").hidden) {
    clearTimeout(state.pollTimer);
    state.pollTimer = setTimeout(loadJobs, POLL_MS);
  }
}

async function cancelJob(id, button) {
  button.disabled = true;
  await guarded($("jobs-error"), async () => {
    const { response, body } = await api(`/api/videos/${encodeURIComponent(id)}/cancel`, {
      method: "POST",
    });
    if (response.status === 409) {
      $("jobs-error").textContent = `Not cancelled: ${errorText(body, 409)}`;
    } else if (!response.ok) {
      throw new Error(`Cancel failed: ${errorText(body, response.status)}`);
    }
    await loadJobs();
  });
  button.disabled = false;
}

// ------------------------------------------------------------------ player

function closePlayer() {
  const video = $("player-video");
  video.pause();
  video.removeAttribute("src");
  video.load();
  $("player-download").href = "#";
  $("player").hidden = true;
  if (state.objectUrl) URL.revokeObjectURL(state.objectUrl);
  state.objectUrl = null;
}

// The file needs the Authorization header, which <video src> cannot send:
// fetch it as a Blob and give the player and the link an object URL.
async function openVideo(id, button) {
  button.disabled = true;
  const previous = button.textContent;
  button.textContent = "Loading…";
  await guarded($("jobs-error"), async () => {
    const { response, body } = await api(`/api/videos/${encodeURIComponent(id)}/file`, {
      blob: true,
    });
    if (!response.ok) throw new Error(`Could not fetch the video: ${errorText(body, response.status)}`);
    closePlayer();
    state.objectUrl = URL.createObjectURL(body);
    const link = $("player-download");
    link.href = state.objectUrl;
    link.download = `${id}.mp4`;
    link.dataset.id = id;
    link.textContent = `Download MP4 (${(body.size / 1024).toFixed(0)} KiB)`;
    $("player-id").textContent = id;
    $("player-video").src = state.objectUrl;
    $("player").hidden = false;
  });
  button.textContent = previous;
  button.disabled = false;
}

// ------------------------------------------------------------------- start

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", () => endSession("You have logged out."));
  const form = $("generate");
  form.addEventListener("submit", submit);
  form.addEventListener("input", scheduleEstimate);
  $("images").addEventListener("change", onImagesChange);
  form.addEventListener("change", scheduleEstimate);
  $("refresh").addEventListener("click", loadJobs);
  $("player-video").addEventListener("error", (event) => {
    if (!state.objectUrl) return; // emptied on purpose
    const error = event.target.error;
    $("jobs-error").textContent =
      `The browser cannot play this video (${error ? error.message || `code ${error.code}` : "unknown error"}); ` +
      "the download link still works.";
  });
  refreshHealth();
  setInterval(refreshHealth, 15000);
  if (sessionStorage.getItem(TOKEN_KEY)) showConsole();
  else $("username").focus();
});
