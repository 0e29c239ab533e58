// The point selection of the P3S Points node as plain data: parse, edit, serialise.
// The JSON is the node's `points` widget value (see p3s_core/selection/points.py):
//   {"version": 1, "images": [{"positive": [[x, y], ...], "negative": [[x, y], ...]}, ...]}
// with x, y normalised to [0, 1]. No DOM or ComfyUI code here.

export const KINDS = ["positive", "negative"];

/** Parse the widget value; returns {model} or {error} (a message for the user). */
export function parsePoints(text) {
  if (!text || !String(text).trim()) return { model: emptyModel() };
  let data;
  try {
    data = JSON.parse(text);
  } catch (err) {
    return { error: `Points text is not valid JSON (${err.message}). Fix it or press Clear all.` };
  }
  const entries = Array.isArray(data) ? data : data?.images;
  if (!Array.isArray(entries)) return { error: 'Points JSON needs an "images" list. Press Clear all to start over.' };
  const images = [];
  for (const entry of entries) {
    const set = { positive: [], negative: [] };
    for (const kind of KINDS) {
      for (const raw of entry?.[kind] ?? []) {
        const xy = Array.isArray(raw) ? raw : [raw?.x, raw?.y];
        const [x, y] = xy.map(Number);
        if (!Number.isFinite(x) || !Number.isFinite(y)) {
          return { error: `A ${kind} point is not [x, y] numbers. Fix the text or press Clear all.` };
        }
        set[kind].push([clamp01(x), clamp01(y)]);
      }
    }
    images.push(set);
  }
  if (!images.length) images.push({ positive: [], negative: [] });
  return { model: { version: 1, images } };
}

/** The widget value for a model: trailing empty sets dropped, coordinates rounded to 1e-4. */
export function serializePoints(model) {
  const images = model.images.map((set) => ({
    positive: set.positive.map(roundPoint),
    negative: set.negative.map(roundPoint),
  }));
  while (images.length > 1 && isEmpty(images[images.length - 1])) images.pop();
  return JSON.stringify({ version: 1, images });
}

export function emptyModel() {
  return { version: 1, images: [{ positive: [], negative: [] }] };
}

/** The point set of image `index`, created (with empty sets before it) when missing. */
export function setAt(model, index) {
  while (model.images.length <= index) model.images.push({ positive: [], negative: [] });
  return model.images[index];
}

export function isEmpty(set) {
  return !set || (set.positive.length === 0 && set.negative.length === 0);
}

/**
 * The point nearest to (x, y) within `radius`, as {kind, i}; `toView` maps a normalised point
 * to view coordinates, where x, y and radius are measured.
 */
export function hitTest(set, x, y, radius, toView) {
  let best = null;
  let bestDistance = radius;
  for (const kind of KINDS) {
    set[kind].forEach((point, i) => {
      const [vx, vy] = toView(point);
      const distance = Math.hypot(vx - x, vy - y);
      if (distance <= bestDistance) {
        best = { kind, i };
        bestDistance = distance;
      }
    });
  }
  return best;
}

export function clamp01(v) {
  return Math.min(1, Math.max(0, v));
}

function roundPoint([x, y]) {
  return [Math.round(x * 1e4) / 1e4, Math.round(y * 1e4) / 1e4];
}
