// The mouse of the P3S Points editor: left click adds a positive point, right click or shift+click a
// negative one, dragging a point moves it, alt/ctrl/cmd+click on a point removes it; the wheel over
// the widget goes to the graph canvas. Only exports; nothing runs on import.

import { app } from "../../scripts/app.js";
import { hitTest, setAt, clamp01 } from "./p3s_points_model.js";

const HIT_RADIUS = 12;

/** Hand a wheel event over the widget to the graph canvas (zoom or pan, as over empty canvas). */
export function forwardWheel(e) {
  const target = e.target;
  if (target instanceof HTMLTextAreaElement && target.scrollHeight > target.clientHeight && !e.ctrlKey) return;
  e.preventDefault();
  e.stopPropagation();
  const canvas = app.canvas;
  if (typeof canvas?.processMouseWheel === "function") canvas.processMouseWheel(e);
  else canvas?.canvas?.dispatchEvent(new WheelEvent("wheel", e));
}

/** Listen to the pointer on the editor's canvas (and keep the browser's context menu off it). */
export function installPointerHandlers(editor) {
  const canvas = editor.canvas;
  canvas.addEventListener("contextmenu", (e) => {
    e.preventDefault();
    e.stopPropagation();
  });
  canvas.addEventListener("pointerdown", (e) => onPointerDown(editor, e));
  canvas.addEventListener("pointermove", (e) => onPointerMove(editor, e));
  canvas.addEventListener("pointerup", (e) => onPointerUp(editor, e));
  canvas.addEventListener("pointercancel", (e) => onPointerUp(editor, e));
}

export function eventPosition(editor, e) {
  // The DOM widget may be scaled with the graph zoom: measure against the drawn box.
  const box = editor.canvas.getBoundingClientRect();
  return {
    x: ((e.clientX - box.left) / box.width) * editor.canvas.clientWidth,
    y: ((e.clientY - box.top) / box.height) * editor.canvas.clientHeight,
  };
}

export function onPointerDown(editor, e) {
  e.preventDefault();
  e.stopPropagation();
  const { model, error } = editor.read();
  if (error) return;
  const rect = editor.imageRect(editor.currentEntry());
  const toView = ([x, y]) => [rect.x + x * rect.w, rect.y + y * rect.h];
  const { x, y } = eventPosition(editor, e);
  const set = setAt(model, editor.index);
  const found = hitTest(set, x, y, HIT_RADIUS, toView);
  const hit = found && !editor.kjPoints()[found.kind] ? found : null; // hidden points stay put
  if (hit && (e.altKey || e.ctrlKey || e.metaKey)) {
    set[hit.kind].splice(hit.i, 1);
    editor.write(model);
    return;
  }
  if (hit && e.button === 0 && !e.shiftKey) {
    editor.drag = { ...hit, pointerId: e.pointerId, model, rect };
    editor.canvas.setPointerCapture(e.pointerId);
    return;
  }
  if (x < rect.x || y < rect.y || x > rect.x + rect.w || y > rect.y + rect.h) return;
  const kind = e.button === 2 || (e.button === 0 && e.shiftKey) ? "negative" : e.button === 0 ? "positive" : null;
  if (!kind) return;
  set[kind].push([clamp01((x - rect.x) / rect.w), clamp01((y - rect.y) / rect.h)]);
  editor.write(model);
}

export function onPointerMove(editor, e) {
  if (!editor.drag || e.pointerId !== editor.drag.pointerId) return;
  e.stopPropagation();
  const { x, y } = eventPosition(editor, e);
  const { rect, model, kind, i } = editor.drag;
  setAt(model, editor.index)[kind][i] = [clamp01((x - rect.x) / rect.w), clamp01((y - rect.y) / rect.h)];
  editor.render(model);
}

export function onPointerUp(editor, e) {
  if (!editor.drag || e.pointerId !== editor.drag.pointerId) return;
  const { model } = editor.drag;
  editor.drag = null;
  editor.canvas.releasePointerCapture?.(e.pointerId);
  editor.write(model);
}
