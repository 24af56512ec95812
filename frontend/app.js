// YTEMPIRE console: submit a video job to the API and follow it.
// Relative URLs only: the host's nginx routes /api (and /health) to the API.
"use strict";

const POLL_MS = 2000;
const FINAL = new Set(["completed", "failed"]);

const $ = (id) => document.getElementById(id);

function errorText(body, status) {
  if (body && Array.isArray(body.errors)) {
    return body.errors.map((e) => `${e.field}: ${e.message}`).join("; ");
  }
  if (body && typeof body.detail === "string") return body.detail;
  return `HTTP ${status}`;
}

async function requestJson(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  return { response, body };
}

async function refreshHealth() {
  const box = $("health");
  try {
    const { response, body } = await requestJson("/health", { cache: "no-store" });
    const state = body && body.status ? body.status : response.ok ? "healthy" : "unhealthy";
    box.dataset.state = state;
    let text = state;
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

function formatCost(job) {
  const cost = job.cost_dollars ?? job.cost;
  if (cost === null || cost === undefined) return "—";
  const value = Number(cost);
  return Number.isFinite(value) ? `$${value.toFixed(4)}` : String(cost);
}

function showJob(id, job) {
  $("job").hidden = false;
  $("job-id").textContent = id;
  $("job-status").textContent = job.status || "unknown";
  const stage = job.failure_stage || (job.failure && job.failure.stage);
  const reason = job.failure_reason || job.error || (job.failure && job.failure.reason);
  $("job-failure").textContent = reason ? `${stage ? stage + ": " : ""}${reason}` : "—";
  $("job-cost").textContent = formatCost(job);
  const file = $("job-file");
  file.replaceChildren();
  if (job.status === "completed") {
    const link = document.createElement("a");
    link.href = job.output_url || `/api/videos/${encodeURIComponent(id)}/file`;
    link.textContent = "Download MP4";
    link.setAttribute("download", `${id}.mp4`);
    file.append(link);
  } else {
    file.textContent = "—";
  }
}

async function poll(id) {
  try {
    const { response, body } = await requestJson(`/api/videos/${encodeURIComponent(id)}`, {
      cache: "no-store",
    });
    if (!response.ok) {
      $("job-status").textContent = `error: ${errorText(body, response.status)}`;
      return;
    }
    showJob(id, body);
    if (!FINAL.has(body.status)) setTimeout(() => poll(id), POLL_MS);
  } catch (err) {
    $("job-status").textContent = `API unreachable (${err.message}); retrying`;
    setTimeout(() => poll(id), POLL_MS * 2);
  }
}

async function submit(event) {
  event.preventDefault();
  const form = event.target;
  const button = $("submit");
  $("form-error").textContent = "";
  const payload = {
    title: form.title.value.trim(),
    script: form.script.value,
    resolution: form.resolution.value,
    duration: Number(form.duration.value),
  };
  button.disabled = true;
  try {
    const { response, body } = await requestJson("/api/videos/generate", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(payload),
    });
    if (response.status !== 202 && !response.ok) {
      $("form-error").textContent = errorText(body, response.status);
      return;
    }
    showJob(body.id, body);
    poll(body.id);
  } catch (err) {
    $("form-error").textContent = `API unreachable (${err.message})`;
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("generate").addEventListener("submit", submit);
  refreshHealth();
  setInterval(refreshHealth, 15000);
});
