"""The browser page served at `/`: upload a file or record from the microphone, pick base or an
adapter, see the transcript and its segments. Plain HTML + JS against the server's own API."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>asr-lora: transcribe</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#222}
 h1{font-size:1.4rem} fieldset{border:1px solid #ccc;border-radius:6px;margin:0 0 1rem;padding:.8rem}
 label{margin-right:1rem} button{padding:.4rem .9rem;margin-right:.5rem}
 #transcript{font-size:1.2rem;padding:.8rem;background:#f4f6f8;border-radius:6px;min-height:1.5rem}
 table{border-collapse:collapse;width:100%;margin-top:.8rem} td,th{border-bottom:1px solid #ddd;
 padding:.3rem .5rem;text-align:left} #status{color:#666;margin:.5rem 0} .err{color:#b00020}
</style></head><body>
<h1>Whisper + LoRA transcription</h1>
<fieldset><legend>Audio</legend>
 <input type="file" id="file" accept="audio/*">
 <button id="rec" type="button">Record</button><button id="stop" type="button" disabled>Stop</button>
 <span id="recinfo"></span></fieldset>
<fieldset><legend>Model</legend>
 <label>Adapter <select id="model"></select></label>
 <label>API key <input id="key" type="password" size="16" placeholder="(if the server has one)"></label>
 <button id="go" type="button">Transcribe</button></fieldset>
<div id="status"></div>
<div id="transcript"></div>
<table id="segments"><thead><tr><th>start</th><th>end</th><th>text</th></tr></thead><tbody></tbody></table>
<script>
const $ = (id) => document.getElementById(id);
let recorded = null, recorder = null, chunks = [];
function headers() { const k = $("key").value; return k ? {"Authorization": "Bearer " + k} : {}; }
function status(msg, err) { $("status").textContent = msg; $("status").className = err ? "err" : ""; }
async function loadModels() {
  const r = await fetch("/v1/models", {headers: headers()});
  const j = await r.json();
  if (!r.ok) { status(j.error.message, true); return; }
  $("model").innerHTML = "";
  for (const m of j.data) {
    const o = document.createElement("option"); o.value = m.id;
    const c = m.card || {}; o.textContent = m.id + (c.rank ? ` (r=${c.rank}, ${(c.targets||[]).join("/")})` : "");
    $("model").appendChild(o);
  }
  if ($("model").options.length > 1) $("model").selectedIndex = 1;
}
$("key").addEventListener("change", loadModels);
$("file").addEventListener("change", () => { recorded = null; $("recinfo").textContent = ""; });
$("rec").onclick = async () => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true});
  chunks = []; recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => chunks.push(e.data);
  recorder.onstop = () => { recorded = new Blob(chunks, {type: recorder.mimeType});
    stream.getTracks().forEach((t) => t.stop());
    $("recinfo").textContent = `recorded ${(recorded.size / 1024).toFixed(1)} KB`; };
  recorder.start(); $("rec").disabled = true; $("stop").disabled = false; $("recinfo").textContent = "recording...";
};
$("stop").onclick = () => { recorder.stop(); $("rec").disabled = false; $("stop").disabled = true; };
$("go").onclick = async () => {
  const f = $("file").files[0];
  const audio = recorded || f;
  if (!audio) { status("choose a file or record first", true); return; }
  const ext = recorded ? (recorded.type.includes("ogg") ? "ogg" : "webm") : "";
  const fd = new FormData();
  fd.append("file", audio, recorded ? "recording." + ext : f.name);
  fd.append("model", $("model").value); fd.append("response_format", "verbose_json");
  status("transcribing with " + $("model").value + "...");
  const t0 = performance.now();
  const r = await fetch("/v1/audio/transcriptions", {method: "POST", body: fd, headers: headers()});
  const j = await r.json();
  if (!r.ok) { status(`${r.status}: ${j.error.message}`, true); return; }
  const secs = ((performance.now() - t0) / 1000).toFixed(2);
  status(`${$("model").value}: ${j.duration.toFixed(1)} s of audio in ${secs} s`);
  $("transcript").textContent = j.text;
  const tb = $("segments").querySelector("tbody"); tb.innerHTML = "";
  for (const s of j.segments) {
    const tr = document.createElement("tr");
    for (const v of [s.start.toFixed(2), s.end.toFixed(2), s.text]) {
      const td = document.createElement("td"); td.textContent = v; tr.appendChild(td); }
    tb.appendChild(tr);
  }
  document.body.dataset.done = "1";
};
loadModels();
</script></body></html>
"""
