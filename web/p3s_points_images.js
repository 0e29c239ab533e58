// The images of the P3S Points editor: LoadImage values as /view references, their URLs, and the
// display copies (at most DISPLAY_MAX_SIDE pixels) the editor draws from, cached by URL.
// Only exports; nothing runs on import.

import { api } from "../../scripts/api.js";

const DISPLAY_MAX_SIDE = 1024;
const imageCache = new Map(); // url -> {state, bitmap, width, height}

export function parseImageRef(value) {
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

export function viewUrl(ref) {
  const params = new URLSearchParams({ filename: ref.filename, type: ref.type ?? "output", subfolder: ref.subfolder ?? "" });
  return api.apiURL(`/view?${params}`);
}

export function loadDisplayImage(url, onReady) {
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
