// Point-picking canvas of the "P3S Points" node.
//
// The node's `points` STRING widget stays the single source of truth: this canvas writes it on
// every edit and redraws from events (its callback, connection changes, the linked Load Image's
// callback, configure, onExecuted), never from a per-frame hook, so it works the same in the
// LiteGraph canvas and in the Nodes 2.0 (Vue) renderer. The workflow JSON (widgets_values), page
// reloads and API prompts all carry the same JSON that the Python node parses.
//
// Mouse: left click adds a positive point, right click or shift+click a negative one, dragging
// a point moves it, alt/ctrl/cmd+click on a point removes it. The toolbar steps through the
// images of a batch (one point set each) and clears points; the node's context menu has the
// same clear/remove entries (getNodeMenuItems where the frontend has it, else getExtraMenuOptions).
// The mouse wheel over the widget zooms / pans the graph as it does over the empty canvas.
//
// Image: followed live from a linked LoadImage-like node (its `image` widget), and taken from the
// node's `ui` output ("p3s_images", downscaled by the server) after a run. The last run's images
// are remembered in node.properties, so they come back after a reload. Whatever arrives is drawn
// from a copy of at most DISPLAY_MAX_SIDE pixels, scaled to the node; the node never grows with
// the image.
//
// KJNodes points: after a run, the node's `ui` output ("p3s_points") holds the point sets the node
// used and which kinds of image 1 came from the kj_positive / kj_negative inputs. Those are drawn
// as hollow markers (not editable) in place of the widget's own points of that kind, which the run
// did not use; a run without KJ input, or unlinking the input, brings the widget's own back.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { emptyModel, hitTest, isEmpty, parsePoints, serializePoints, setAt, clamp01 } from "./p3s_points_model.js";

const NODE_TYPE = "P3SPoints";
const DISPLAY_MAX_SIDE = 1024;
const MARKER_RADIUS = 7;
const HIT_RADIUS = 12;
const COLOURS = { positive: "#22c55e", negative: "#ef4444", outline: "#ffffff" };
const imageCache = new Map(); // url -> {state, bitmap, width, height}
const editors = new Set(); // live editors, refreshed when a linked Load Image changes
const watchedWidgets = new WeakSet();

export const MESSAGES = {
  none: "No image yet: connect a Load Image node to the image input, or run the workflow once.",
  loading: "Loading image…",
  error: "Image not found on the server: pick it again in Load Image, or run the workflow once.",
};

/** Chain onto a widget's callback once, so a change of the linked image refreshes the editors. */
function watchWidget(widget) {
  if (!widget || watchedWidgets.has(widget)) return;
  watchedWidgets.add(widget);
  const callback = widget.callback;
  widget.callback = function () {
    const result = callback?.apply(this, arguments);
    for (const editor of editors) editor.refresh();
    return result;
  };
}

/** Hand a wheel event over the widget to the graph canvas (zoom or pan, as over empty canvas). */
function forwardWheel(e) {
  const target = e.target;
  if (target instanceof HTMLTextAreaElement && target.scrollHeight > target.clientHeight && !e.ctrlKey) return;
  e.preventDefault();
  e.stopPropagation();
  const canvas = app.canvas;
  if (typeof canvas?.processMouseWheel === "function") canvas.processMouseWheel(e);
  else canvas?.canvas?.dispatchEvent(new WheelEvent("wheel", e));
}

function parseImageRef(value) {
  // LoadImage values look like "name.png", "sub/name.png" or "name.png [output]".
  const match = /^(.*?)(?: \[(input|output|temp)\])?$/.exec(String(value).trim());
  const path = match[1];
  const slash = path.lastIndexOf("/");
  return {
    filename: slash >= 0 ? path.slice(slash + 1) : path,
    subfolder: slash >= 0 ? path.slice(0, slash) : "",
    type: match[2] ?? "input",
  };
}

function viewUrl(ref) {
  const params = new URLSearchParams({ filename: ref.filename, type: ref.type ?? "output", subfolder: ref.subfolder ?? "" });
  return api.apiURL(`/view?${params}`);
}

function loadDisplayImage(url, onReady) {
  const cached = imageCache.get(url);
  if (cached) return cached;
  const entry = { state: "loading", bitmap: null, width: 0, height: 0 };
  imageCache.set(url, entry);
  const img = new Image();
  img.onload = () => {
    const scale = Math.min(1, DISPLAY_MAX_SIDE / Math.max(img.naturalWidth, img.naturalHeight));
    const bitmap = document.createElement("canvas");
    bitmap.width = Math.max(1, Math.round(img.naturalWidth * scale));
    bitmap.height = Math.max(1, Math.round(img.naturalHeight * scale));
    bitmap.getContext("2d").drawImage(img, 0, 0, bitmap.width, bitmap.height);
    Object.assign(entry, { state: "ready", bitmap, width: img.naturalWidth, height: img.naturalHeight });
    img.onload = img.onerror = null; // the full-size original is dropped with `img`
    onReady();
  };
  img.onerror = () => {
    entry.state = "error";
    onReady();
  };
  img.src = url;
  return entry;
}

function button(label, title, onClick) {
  const el = document.createElement("button");
  el.textContent = label;
  el.title = title;
  el.style.cssText =
    "padding:1px 6px;font-size:11px;background:var(--comfy-input-bg,#222);color:var(--input-text,#ddd);" +
    "border:1px solid var(--border-color,#444);border-radius:4px;cursor:pointer;";
  el.addEventListener("pointerdown", (e) => e.stopPropagation());
  el.addEventListener("click", (e) => {
    e.stopPropagation();
    onClick();
  });
  return el;
}

class PointsEditor {
  constructor(node) {
    this.node = node;
    this.pointsWidget = node.widgets.find((w) => w.name === "points");
    this.index = 0;
    this.drag = null;
    this.lastText = null;
    this.lastSourceKey = null;
    this.kjRun = null; // {images, kj} from the last run's "p3s_points", when KJ inputs supplied points
    this.buildDom();
    // The frontend's own text box stays hidden in both renderers (`hidden` for the canvas,
    // `options.hidden` for Vue nodes); the editor has its own JSON box behind "{ }".
    const widget = this.pointsWidget;
    widget.hidden = true;
    widget.options = { ...(widget.options ?? {}), hidden: true };
    if (widget.computeLayoutSize) widget.computeLayoutSize = () => ({ minHeight: 0, maxHeight: 0, minWidth: 0 });
    const callback = widget.callback;
    widget.callback = function () {
      const result = callback?.apply(this, arguments);
      node.p3sEditor?.refresh();
      return result;
    };
    this.showJson(!!node.properties?.p3s_show_json);
  }

  buildDom() {
    const root = document.createElement("div");
    root.className = "p3s-points-editor widget-expands"; // widget-expands: fills a Vue node
    root.style.cssText = "display:flex;flex-direction:column;gap:4px;width:100%;height:100%;box-sizing:border-box;";
    const bar = document.createElement("div");
    bar.style.cssText = "display:flex;gap:4px;align-items:center;flex-wrap:wrap;font-size:11px;color:var(--input-text,#ddd);";
    this.prevButton = button("◀", "Previous image of the batch", () => this.step(-1));
    this.label = document.createElement("span");
    this.label.className = "p3s-image-label";
    this.nextButton = button("▶", "Next image of the batch (adds a point set after the last one)", () => this.step(1));
    this.counts = document.createElement("span");
    this.counts.style.cssText = "margin-left:4px;opacity:0.8;";
    const spacer = document.createElement("span");
    spacer.style.flex = "1";
    bar.append(
      this.prevButton,
      this.label,
      this.nextButton,
      this.counts,
      spacer,
      button("Clear", "Remove the points of this image", () => this.clearImage()),
      button("Clear all", "Remove the points of every image", () => this.clearAll()),
      button("{ }", "Show or hide the points JSON", () => this.toggleJson()),
    );
    this.canvas = document.createElement("canvas");
    this.canvas.className = "p3s-points-canvas";
    this.canvas.style.cssText = "flex:1;min-height:120px;width:100%;display:block;border-radius:4px;cursor:crosshair;touch-action:none;";
    const hint = document.createElement("div");
    hint.textContent = "Left click: subject · right/shift click: exclude · drag: move · alt/ctrl click: remove";
    hint.style.cssText = "font-size:10px;opacity:0.6;color:var(--input-text,#ddd);white-space:nowrap;overflow:hidden;";
    this.status = document.createElement("div");
    this.status.className = "p3s-status";
    this.status.style.cssText = "font-size:11px;color:#e5c07b;min-height:14px;";
    this.jsonBox = document.createElement("textarea");
    this.jsonBox.className = "p3s-points-json";
    this.jsonBox.spellcheck = false;
    this.jsonBox.style.cssText =
      "height:70px;resize:vertical;font:11px monospace;background:var(--comfy-input-bg,#222);" +
      "color:var(--input-text,#ddd);border:1px solid var(--border-color,#444);border-radius:4px;";
    this.jsonBox.addEventListener("input", () => this.writeText(this.jsonBox.value));
    for (const type of ["pointerdown", "keydown"]) this.jsonBox.addEventListener(type, (e) => e.stopPropagation());
    root.append(bar, this.status, this.canvas, this.jsonBox, hint);
    root.addEventListener("wheel", forwardWheel, { passive: false });
    this.canvas.addEventListener("pointerenter", () => this.refresh());
    this.root = root;

    this.canvas.addEventListener("contextmenu", (e) => {
      e.preventDefault();
      e.stopPropagation();
    });
    this.canvas.addEventListener("pointerdown", (e) => this.onPointerDown(e));
    this.canvas.addEventListener("pointermove", (e) => this.onPointerMove(e));
    this.canvas.addEventListener("pointerup", (e) => this.onPointerUp(e));
    this.canvas.addEventListener("pointercancel", (e) => this.onPointerUp(e));
    new ResizeObserver(() => this.render()).observe(this.canvas);
  }

  // ----- points (read from / written to the `points` widget) -----

  read() {
    return parsePoints(this.pointsWidget.value);
  }

  write(model) {
    this.writeText(serializePoints(model));
  }

  /** Set the `points` widget's text (through its callback, which Vue nodes listen to) and redraw. */
  writeText(text) {
    this.pointsWidget.value = text;
    this.pointsWidget.callback?.(text);
    this.lastText = null;
    this.render();
    this.node.setDirtyCanvas(true, true);
    // Record the edit now (undo history, and the copy of the workflow that survives a reload).
    app.extensionManager?.workflow?.activeWorkflow?.changeTracker?.checkState?.();
  }

  edit(change) {
    const { model, error } = this.read();
    if (error) return;
    change(model, setAt(model, this.index));
    this.write(model);
  }

  clearImage() {
    this.edit((model, set) => {
      set.positive.length = 0;
      set.negative.length = 0;
    });
  }

  clearAll() {
    this.index = 0;
    this.write(emptyModel());
  }

  /** Remove the last negative point, or the last positive one when there is no negative point. */
  removeLast() {
    this.edit((model, set) => {
      if (set.negative.length) set.negative.pop();
      else set.positive.pop();
    });
  }

  toggleJson() {
    this.node.properties.p3s_show_json = !this.node.properties.p3s_show_json;
    this.showJson(this.node.properties.p3s_show_json);
    this.node.setDirtyCanvas(true, true);
  }

  showJson(show) {
    this.jsonBox.style.display = show ? "block" : "none";
    if (show) this.jsonBox.value = this.pointsWidget.value ?? "";
  }

  step(delta) {
    const { model } = this.read();
    const count = this.slotCount(model);
    const next = this.index + delta;
    if (next < 0) return;
    // Stepping past the last slot opens a new point set, but only after the current one has points.
    if (next >= count && (next > count || isEmpty(model?.images[this.index]))) return;
    this.index = next;
    this.render();
  }

  slotCount(model) {
    return Math.max(1, model?.images.length ?? 1, this.sources().length);
  }

  // ----- the image(s) -----

  /** The `image` widget of a Load Image-like node linked to the image input, if any. */
  linkedImageWidget() {
    const slot = this.node.inputs?.findIndex((input) => input.name === "image") ?? -1;
    if (slot < 0 || this.node.inputs[slot].link == null || !this.node.graph) return null;
    const origin = this.node.getInputNode(slot);
    return origin?.widgets?.find((w) => w.name === "image") ?? null;
  }

  linkedImageRef() {
    const widget = this.linkedImageWidget();
    return widget && typeof widget.value === "string" && widget.value ? parseImageRef(widget.value) : null;
  }

  /** Display URLs, one per image of the batch: the last run's images unless the linked LoadImage changed since. */
  sources() {
    const linked = this.linkedImageRef();
    const linkedKey = linked ? JSON.stringify(linked) : "";
    const run = this.node.properties?.p3s_run_images;
    if (Array.isArray(run) && run.length && (this.node.properties.p3s_run_source ?? "") === linkedKey) {
      return run.map(viewUrl);
    }
    if (linked) return [viewUrl(linked)];
    return [];
  }

  onExecuted(output) {
    const used = output?.p3s_points?.[0];
    this.kjRun = used?.kj?.length ? used : null;
    const images = output?.p3s_images;
    if (!Array.isArray(images)) {
      this.render();
      return;
    }
    const linked = this.linkedImageRef();
    this.node.properties.p3s_run_images = images.map(({ filename, subfolder, type }) => ({ filename, subfolder, type }));
    this.node.properties.p3s_run_source = linked ? JSON.stringify(linked) : "";
    this.render();
  }

  /** The kinds of the current image that the last run took from still linked KJ inputs, with their points. */
  kjPoints() {
    if (!this.kjRun || this.index !== 0) return {};
    const shown = {};
    for (const kind of this.kjRun.kj) {
      const input = this.node.inputs?.find((i) => i.name === `kj_${kind}`);
      if (input?.link != null) shown[kind] = this.kjRun.images?.[0]?.[kind] ?? [];
    }
    return shown;
  }

  /** What a drawing depends on besides the run: the text, the image sources, the linked KJ inputs. */
  drawKey() {
    return `${this.pointsWidget.value}\u0000${this.sources().join("|")}\u0000${Object.keys(this.kjPoints())}`;
  }

  /** Redraw when the text or the image source changed since the last drawing (event handlers call this). */
  refresh() {
    watchWidget(this.linkedImageWidget());
    if (this.drawKey() !== this.lastText) this.render();
  }

  // ----- geometry -----

  /** The rectangle (CSS pixels in the canvas) that shows the current image. */
  imageRect(entry) {
    const width = this.canvas.clientWidth;
    const height = this.canvas.clientHeight;
    const aspect = entry?.state === "ready" ? entry.bitmap.width / entry.bitmap.height : 1;
    const w = Math.min(width, height * aspect);
    const h = w / aspect;
    return { x: (width - w) / 2, y: (height - h) / 2, w, h };
  }

  currentEntry() {
    const url = this.sources()[this.index];
    return url ? loadDisplayImage(url, () => this.render()) : null;
  }

  eventPosition(e) {
    // The DOM widget may be scaled with the graph zoom: measure against the drawn box.
    const box = this.canvas.getBoundingClientRect();
    return {
      x: ((e.clientX - box.left) / box.width) * this.canvas.clientWidth,
      y: ((e.clientY - box.top) / box.height) * this.canvas.clientHeight,
    };
  }

  // ----- mouse -----

  onPointerDown(e) {
    e.preventDefault();
    e.stopPropagation();
    const { model, error } = this.read();
    if (error) return;
    const rect = this.imageRect(this.currentEntry());
    const toView = ([x, y]) => [rect.x + x * rect.w, rect.y + y * rect.h];
    const { x, y } = this.eventPosition(e);
    const set = setAt(model, this.index);
    const found = hitTest(set, x, y, HIT_RADIUS, toView);
    const hit = found && !this.kjPoints()[found.kind] ? found : null; // hidden points stay put
    if (hit && (e.altKey || e.ctrlKey || e.metaKey)) {
      set[hit.kind].splice(hit.i, 1);
      this.write(model);
      return;
    }
    if (hit && e.button === 0 && !e.shiftKey) {
      this.drag = { ...hit, pointerId: e.pointerId, model, rect };
      this.canvas.setPointerCapture(e.pointerId);
      return;
    }
    if (x < rect.x || y < rect.y || x > rect.x + rect.w || y > rect.y + rect.h) return;
    const kind = e.button === 2 || (e.button === 0 && e.shiftKey) ? "negative" : e.button === 0 ? "positive" : null;
    if (!kind) return;
    set[kind].push([clamp01((x - rect.x) / rect.w), clamp01((y - rect.y) / rect.h)]);
    this.write(model);
  }

  onPointerMove(e) {
    if (!this.drag || e.pointerId !== this.drag.pointerId) return;
    e.stopPropagation();
    const { x, y } = this.eventPosition(e);
    const { rect, model, kind, i } = this.drag;
    setAt(model, this.index)[kind][i] = [clamp01((x - rect.x) / rect.w), clamp01((y - rect.y) / rect.h)];
    this.render(model);
  }

  onPointerUp(e) {
    if (!this.drag || e.pointerId !== this.drag.pointerId) return;
    const { model } = this.drag;
    this.drag = null;
    this.canvas.releasePointerCapture?.(e.pointerId);
    this.write(model);
  }

  // ----- drawing -----

  render(draft) {
    const parsed = draft ? { model: draft } : this.read();
    const sources = this.sources();
    this.lastText = this.drawKey();
    // The current image may be a new, still empty slot after the last point set.
    const count = Math.max(this.slotCount(parsed.model), this.index + 1);
    const set = parsed.model?.images[this.index] ?? { positive: [], negative: [] };
    this.label.textContent = `Image ${this.index + 1} / ${count}`;
    this.counts.textContent = `+${set.positive.length} −${set.negative.length}`;
    this.prevButton.disabled = this.index === 0;
    // Messages go to the line above the image, never over the markers.
    const state = this.currentEntry()?.state;
    const kj = this.kjPoints();
    const kjKinds = Object.keys(kj);
    const kjNote = kjKinds.length
      ? `Hollow: ${kjKinds.join(" and ")} points from kj_${kjKinds.join(" / kj_")} (last run); yours of that kind are not used.`
      : "";
    this.status.textContent = [state === "ready" ? "" : MESSAGES[state ?? "none"], kjNote].filter(Boolean).join(" ");
    if (this.jsonBox.style.display !== "none" && document.activeElement !== this.jsonBox) {
      this.jsonBox.value = this.pointsWidget.value ?? "";
    }

    const dpr = window.devicePixelRatio || 1;
    const width = this.canvas.clientWidth;
    const height = this.canvas.clientHeight;
    if (!width || !height) return;
    if (this.canvas.width !== Math.round(width * dpr) || this.canvas.height !== Math.round(height * dpr)) {
      this.canvas.width = Math.round(width * dpr);
      this.canvas.height = Math.round(height * dpr);
    }
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const entry = this.currentEntry();
    const rect = this.imageRect(entry);
    if (entry?.state === "ready") {
      ctx.imageSmoothingQuality = "high";
      ctx.drawImage(entry.bitmap, rect.x, rect.y, rect.w, rect.h);
    } else {
      ctx.fillStyle = "#3a3a3a";
      ctx.fillRect(rect.x, rect.y, rect.w, rect.h);
    }
    if (parsed.error) {
      this.status.textContent = parsed.error;
      return;
    }
    for (const kind of ["negative", "positive"]) {
      const toView = ([x, y]) => [rect.x + x * rect.w, rect.y + y * rect.h];
      if (kj[kind]) kj[kind].forEach((p, i) => this.drawKjMarker(ctx, kind, ...toView(p), i + 1));
      else set[kind].forEach((p, i) => this.drawMarker(ctx, kind, ...toView(p), i + 1));
    }
  }

  /** A hollow marker: a point the last run took from a KJ input (not editable here). */
  drawKjMarker(ctx, kind, x, y, number) {
    const r = MARKER_RADIUS;
    ctx.beginPath();
    if (kind === "positive") ctx.arc(x, y, r, 0, Math.PI * 2);
    else ctx.rect(x - r, y - r, 2 * r, 2 * r);
    ctx.lineWidth = 6;
    ctx.strokeStyle = "#000000";
    ctx.stroke();
    ctx.lineWidth = 3;
    ctx.strokeStyle = COLOURS[kind];
    ctx.stroke();
    this.drawLabel(ctx, `KJ${number}`, x + r + 3, y - r);
  }

  drawMarker(ctx, kind, x, y, number) {
    const r = MARKER_RADIUS;
    ctx.lineWidth = 2;
    ctx.strokeStyle = COLOURS.outline;
    ctx.fillStyle = COLOURS[kind];
    ctx.beginPath();
    if (kind === "positive") ctx.arc(x, y, r, 0, Math.PI * 2);
    else ctx.rect(x - r, y - r, 2 * r, 2 * r);
    ctx.fill();
    ctx.stroke();
    this.drawLabel(ctx, String(number), x + r + 3, y - r);
  }

  drawLabel(ctx, text, x, y) {
    ctx.font = "bold 11px sans-serif";
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    ctx.lineWidth = 3;
    ctx.strokeStyle = "#000000";
    ctx.strokeText(text, x, y);
    ctx.fillStyle = COLOURS.outline;
    ctx.fillText(text, x, y);
  }

}

/** The node's menu entries (plain items: the Vue menu calls callbacks without `this`). */
function menuItems(editor) {
  const n = editor.index + 1;
  return [
    { content: `P3S: remove last point of image ${n}`, callback: () => editor.removeLast() },
    { content: `P3S: clear points of image ${n}`, callback: () => editor.clearImage() },
    { content: "P3S: clear points of all images", callback: () => editor.clearAll() },
    {
      content: editor.node.properties.p3s_show_json ? "P3S: hide points JSON" : "P3S: show points JSON",
      callback: () => editor.toggleJson(),
    },
  ];
}

// Frontends with the extension-level hook collect it for both renderers; older ones only know
// the node's getExtraMenuOptions.
const HAS_NODE_MENU_HOOK = typeof app.collectNodeMenuItems === "function";

function installLegacyMenu(nodeType) {
  const getExtraMenuOptions = nodeType.prototype.getExtraMenuOptions;
  nodeType.prototype.getExtraMenuOptions = function (canvas, options) {
    const result = getExtraMenuOptions?.apply(this, arguments);
    if (this.p3sEditor) options.push(null, ...menuItems(this.p3sEditor));
    return result;
  };
}

const extension = {
  name: "p3s.points",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_TYPE) return;

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      this.properties ??= {};
      const editor = new PointsEditor(this);
      this.p3sEditor = editor;
      editors.add(editor);
      const widget = this.addDOMWidget("points_canvas", "p3s_points_canvas", editor.root, {
        serialize: false,
        hideOnZoom: false,
        getMinHeight: () => 220,
        getValue: () => "",
        setValue: () => {},
      });
      widget.serialize = false; // not in widgets_values: the `points` widget holds the value
      this.setSize([Math.max(this.size[0], 380), Math.max(this.size[1], 460)]);
      return result;
    };

    const onRemoved = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function () {
      editors.delete(this.p3sEditor);
      return onRemoved?.apply(this, arguments);
    };

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      this.p3sEditor?.onExecuted(output);
    };

    const onConnectionsChange = nodeType.prototype.onConnectionsChange;
    nodeType.prototype.onConnectionsChange = function () {
      const result = onConnectionsChange?.apply(this, arguments);
      this.p3sEditor?.refresh();
      return result;
    };

    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const result = onConfigure?.apply(this, arguments);
      if (this.p3sEditor) {
        this.p3sEditor.index = 0;
        this.p3sEditor.showJson(!!this.properties?.p3s_show_json);
        this.p3sEditor.render();
      }
      return result;
    };

    // The linked Load Image is configured after this node: draw again once the graph is complete.
    const onAfterGraphConfigured = nodeType.prototype.onAfterGraphConfigured;
    nodeType.prototype.onAfterGraphConfigured = function () {
      const result = onAfterGraphConfigured?.apply(this, arguments);
      this.p3sEditor?.refresh();
      return result;
    };

    if (!HAS_NODE_MENU_HOOK) installLegacyMenu(nodeType);
  },
};
if (HAS_NODE_MENU_HOOK) {
  extension.getNodeMenuItems = (node) => (node.p3sEditor ? [null, ...menuItems(node.p3sEditor)] : []);
}
app.registerExtension(extension);
