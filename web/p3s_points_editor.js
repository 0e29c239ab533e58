// The P3S Points editor: its DOM (toolbar, canvas, status line, JSON box), its state (the image
// shown, a drag in progress, the last run's KJ points) and what it reads and writes: the node's
// `points` widget, the image sources (linked Load Image, last run) and the run's output. Drawing,
// mouse and images are in p3s_points_draw.js, p3s_points_input.js and p3s_points_images.js.
// Only exports; nothing runs on import.

import { app } from "../../scripts/app.js";
import { emptyModel, isEmpty, parsePoints, serializePoints, setAt } from "./p3s_points_model.js";
import { renderEditor } from "./p3s_points_draw.js";
import { forwardWheel, installPointerHandlers } from "./p3s_points_input.js";
import { loadDisplayImage, parseImageRef, viewUrl } from "./p3s_points_images.js";

export const editors = new Set(); // live editors, refreshed when a linked Load Image changes
const watchedWidgets = new WeakSet();

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

export class PointsEditor {
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
    installPointerHandlers(this);
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

  // ----- drawing (p3s_points_draw.js) -----

  render(draft) {
    renderEditor(this, draft);
  }
}
