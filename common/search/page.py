"""The search demo's single page: plain HTML, CSS and a little JavaScript talking to ``common.search.server``.

Its state lives in the address (``/?ref=ID&q=TEXT&stage=NAME``, ``ref=u3`` for an upload), so a page opened with
``ref`` and ``q`` runs that search at once and every step can be bookmarked.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Composed image search</title>
<style>
  body { font-family: sans-serif; margin: 0; background: #f4f4f4; color: #222; }
  header { background: #233; color: #fff; padding: 8px 16px; }
  header span { color: #bcd; margin-left: 12px; }
  main { display: grid; grid-template-columns: 330px 1fr; gap: 16px; padding: 12px 16px; }
  section { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 10px; }
  h2 { font-size: 15px; margin: 4px 0 8px; }
  .grid { display: flex; flex-wrap: wrap; gap: 6px; }
  .thumb, .result { width: 96px; cursor: pointer; font-size: 11px; text-align: center; word-break: break-all; }
  .thumb img, .result img { width: 96px; height: 96px; object-fit: contain; background: #eee; border: 2px solid #ccc; }
  .thumb:hover img, .result:hover img { border-color: #28a; }
  .result { width: 128px; } .result img { width: 128px; height: 128px; }
  #reference img { width: 160px; height: 160px; object-fit: contain; background: #eee; border: 3px solid #28a; }
  #message { color: #b00; min-height: 1.2em; margin: 6px 0; }
  form { display: flex; gap: 8px; margin-bottom: 8px; }
  #caption { flex: 1; padding: 6px; font-size: 14px; }
  .pager { display: flex; gap: 6px; align-items: center; margin: 6px 0; font-size: 12px; }
</style>
</head>
<body>
<header><b>Composed image search</b><span id="info"></span></header>
<main>
  <div>
    <section id="reference"><h2>Reference</h2><div id="reference-view">none chosen: pick one below</div>
      <p><label>or upload a JPEG/PNG: <input type="file" id="upload" accept="image/jpeg,image/png"></label></p>
    </section>
    <section><h2>Gallery</h2>
      <input id="filter" placeholder="search by name" style="width: 95%">
      <div class="pager"><button id="prev">&lt;</button><span id="page"></span><button id="next">&gt;</button></div>
      <div id="gallery" class="grid"></div>
    </section>
  </div>
  <div>
    <section><h2>Modification</h2>
      <form id="query"><input id="caption" placeholder="e.g. is red and has long sleeves" autocomplete="off">
        <span id="stages"></span><button id="search" type="submit">Search</button></form>
      <div id="message"></div>
    </section>
    <section><h2>Results <small>(click one to make it the next reference)</small></h2>
      <div id="results" class="grid"></div></section>
  </div>
</main>
<script>
const state = {ref: null, caption: "", stage: null, offset: 0, limit: 24, filter: "", info: null};
const $ = (id) => document.getElementById(id);

function message(text) { $("message").textContent = text || ""; }

async function call(url, options) {
  const response = await fetch(url, options);
  const body = await response.json();
  if (!response.ok) { throw new Error(body.error || response.statusText); }
  return body;
}

function tile(item, cls, onclick, caption) {
  const div = document.createElement("div");
  div.className = cls; div.dataset.id = item.id; div.title = item.name + " (" + item.group + ")";
  const img = document.createElement("img"); img.src = item.url; img.alt = item.name;
  const label = document.createElement("div"); label.textContent = caption;
  div.append(img, label); div.onclick = () => onclick(item);
  return div;
}

function saveState() {
  const params = new URLSearchParams();
  if (state.ref !== null) params.set("ref", state.ref);
  if (state.caption) params.set("q", state.caption);
  if (state.info.stages.length > 1) params.set("stage", state.stage);
  history.replaceState(null, "", "?" + params.toString());
}

function showReference(url, name) {
  const view = $("reference-view"); view.textContent = "";
  const img = document.createElement("img"); img.src = url; img.alt = name;
  const label = document.createElement("div"); label.id = "reference-name"; label.textContent = name;
  view.append(img, label);
}

function chooseReference(item) {
  state.ref = item.id; showReference(item.url, item.name + " (" + item.group + ")");
  $("results").textContent = ""; $("caption").value = ""; state.caption = ""; $("caption").focus();
  message(""); saveState();
}

async function loadGallery() {
  const params = new URLSearchParams({q: state.filter, offset: state.offset, limit: state.limit});
  const page = await call("/api/gallery?" + params);
  const grid = $("gallery"); grid.textContent = "";
  page.items.forEach((item) => grid.append(tile(item, "thumb", chooseReference, item.name)));
  const last = Math.min(page.total, state.offset + state.limit);
  $("page").textContent = page.total ? (state.offset + 1) + "-" + last + " of " + page.total : "no match";
  $("prev").disabled = state.offset === 0; $("next").disabled = last >= page.total;
}

async function search() {
  state.caption = $("caption").value.trim();
  if (state.ref === null) { message("choose a reference image first"); return; }
  if (!state.caption) { message("type a modification"); return; }
  message("searching..."); saveState();
  try {
    const answer = await call("/api/search", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({reference: state.ref, caption: state.caption, stage: state.stage})});
    const grid = $("results"); grid.textContent = "";
    answer.results.forEach((item) => grid.append(
      tile(item, "result", chooseReference, "#" + item.rank + " " + item.name + " " + item.score.toFixed(3))));
    message("");
  } catch (error) { message(error.message); }
}

async function upload(file) {
  if (!file) return;
  if (file.size > state.info.max_upload_bytes) {
    message("the file is larger than " + state.info.max_upload_bytes + " bytes"); return;
  }
  try {
    const answer = await call("/api/upload", {method: "POST", body: file,
      headers: {"Content-Type": file.type || "application/octet-stream"}});
    state.ref = answer.upload; showReference(answer.url, file.name + " (uploaded)");
    $("results").textContent = ""; message(""); saveState();
  } catch (error) { message(error.message); }
}

function showStages(stages) {
  const box = $("stages"); box.textContent = "";
  if (stages.length < 2) return;
  stages.forEach((stage) => {
    const label = document.createElement("label");
    const radio = document.createElement("input");
    radio.type = "radio"; radio.name = "stage"; radio.value = stage; radio.id = "stage-" + stage;
    radio.checked = stage === state.stage;
    radio.onchange = () => {
      state.stage = stage;
      if (state.ref !== null && $("caption").value.trim()) search(); else saveState();
    };
    label.append(radio, " " + stage.replace("stage", "stage ")); box.append(label);
  });
}

async function start() {
  state.info = await call("/api/info");
  const info = state.info;
  $("info").textContent = info.paper + " | " + info.dataset + " " + info.split + " | " + info.images + " images";
  const params = new URLSearchParams(location.search);
  state.stage = state.info.stages.includes(params.get("stage")) ? params.get("stage") : state.info.stages[0];
  showStages(state.info.stages);
  const ref = params.get("ref");
  if (ref !== null && /^u[0-9]+$/.test(ref)) { state.ref = ref; showReference("/upload/" + ref, "upload " + ref); }
  else if (ref !== null && /^[0-9]+$/.test(ref)) {
    state.ref = Number(ref);
    try {
      const item = await call("/api/image/" + ref);
      showReference(item.url, item.name + " (" + item.group + ")");
    } catch (error) { message(error.message); }
  }
  $("caption").value = params.get("q") || "";
  await loadGallery();
  if (state.ref !== null && $("caption").value) await search();
  document.body.dataset.ready = "1";
}

$("query").onsubmit = (event) => { event.preventDefault(); search(); };
$("upload").onchange = (event) => upload(event.target.files[0]);
$("filter").oninput = () => { state.filter = $("filter").value; state.offset = 0; loadGallery(); };
$("prev").onclick = () => { state.offset = Math.max(0, state.offset - state.limit); loadGallery(); };
$("next").onclick = () => { state.offset += state.limit; loadGallery(); };
start().catch((error) => message(error.message));
</script>
</body>
</html>
"""
