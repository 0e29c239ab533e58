// The drawing of the P3S Points editor: the toolbar texts and status line, then the canvas with the
// current image (or a grey placeholder), the point markers with their numbers, and the hollow
// markers of points the last run took from the KJ inputs. Only exports; nothing runs on import.

const MARKER_RADIUS = 7;
const COLOURS = { positive: "#22c55e", negative: "#ef4444", outline: "#ffffff" };

export const MESSAGES = {
  none: "No image yet: connect a Load Image node to the image input, or run the workflow once.",
  loading: "Loading image…",
  error: "Image not found on the server: pick it again in Load Image, or run the workflow once.",
};

/** Draw `editor` from its `points` widget, or from `draft` (a model being dragged) when given. */
export function renderEditor(editor, draft) {
  const parsed = draft ? { model: draft } : editor.read();
  const sources = editor.sources();
  editor.lastText = editor.drawKey();
  // The current image may be a new, still empty slot after the last point set.
  const count = Math.max(editor.slotCount(parsed.model), editor.index + 1);
  const set = parsed.model?.images[editor.index] ?? { positive: [], negative: [] };
  editor.label.textContent = `Image ${editor.index + 1} / ${count}`;
  editor.counts.textContent = `+${set.positive.length} −${set.negative.length}`;
  editor.prevButton.disabled = editor.index === 0;
  // Messages go to the line above the image, never over the markers.
  const state = editor.currentEntry()?.state;
  const kj = editor.kjPoints();
  const kjKinds = Object.keys(kj);
  const kjNote = kjKinds.length
    ? `Hollow: ${kjKinds.join(" and ")} points from kj_${kjKinds.join(" / kj_")} (last run); yours of that kind are not used.`
    : "";
  editor.status.textContent = [state === "ready" ? "" : MESSAGES[state ?? "none"], kjNote].filter(Boolean).join(" ");
  if (editor.jsonBox.style.display !== "none" && document.activeElement !== editor.jsonBox) {
    editor.jsonBox.value = editor.pointsWidget.value ?? "";
  }

  const dpr = window.devicePixelRatio || 1;
  const width = editor.canvas.clientWidth;
  const height = editor.canvas.clientHeight;
  if (!width || !height) return;
  if (editor.canvas.width !== Math.round(width * dpr) || editor.canvas.height !== Math.round(height * dpr)) {
    editor.canvas.width = Math.round(width * dpr);
    editor.canvas.height = Math.round(height * dpr);
  }
  const ctx = editor.canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const entry = editor.currentEntry();
  const rect = editor.imageRect(entry);
  if (entry?.state === "ready") {
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(entry.bitmap, rect.x, rect.y, rect.w, rect.h);
  } else {
    ctx.fillStyle = "#3a3a3a";
    ctx.fillRect(rect.x, rect.y, rect.w, rect.h);
  }
  if (parsed.error) {
    editor.status.textContent = parsed.error;
    return;
  }
  for (const kind of ["negative", "positive"]) {
    const toView = ([x, y]) => [rect.x + x * rect.w, rect.y + y * rect.h];
    if (kj[kind]) kj[kind].forEach((p, i) => drawKjMarker(ctx, kind, ...toView(p), i + 1));
    else set[kind].forEach((p, i) => drawMarker(ctx, kind, ...toView(p), i + 1));
  }
}

/** A hollow marker: a point the last run took from a KJ input (not editable here). */
export function drawKjMarker(ctx, kind, x, y, number) {
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
  drawLabel(ctx, `KJ${number}`, x + r + 3, y - r);
}

export function drawMarker(ctx, kind, x, y, number) {
  const r = MARKER_RADIUS;
  ctx.lineWidth = 2;
  ctx.strokeStyle = COLOURS.outline;
  ctx.fillStyle = COLOURS[kind];
  ctx.beginPath();
  if (kind === "positive") ctx.arc(x, y, r, 0, Math.PI * 2);
  else ctx.rect(x - r, y - r, 2 * r, 2 * r);
  ctx.fill();
  ctx.stroke();
  drawLabel(ctx, String(number), x + r + 3, y - r);
}

export function drawLabel(ctx, text, x, y) {
  ctx.font = "bold 11px sans-serif";
  ctx.textAlign = "left";
  ctx.textBaseline = "middle";
  ctx.lineWidth = 3;
  ctx.strokeStyle = "#000000";
  ctx.strokeText(text, x, y);
  ctx.fillStyle = COLOURS.outline;
  ctx.fillText(text, x, y);
}
