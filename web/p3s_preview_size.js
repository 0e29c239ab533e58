// P3S nodes that show an image after a run (RNGR Mask heat map, schedule plot, attention maps)
// keep the size the user gave them: the preview is scaled into the node's free space instead of
// growing the node over the nodes below it. Our addition; core nodes (Preview Image, Save Image)
// keep the frontend's behaviour.
//
// LiteGraph canvas: the frontend's preview widget asks for a 220 px minimum, which grows the node;
// ours asks for none. Nodes 2.0 (Vue): the <img> is taken out of the flow so its natural height
// cannot stretch the node's box.

import { app } from "../../scripts/app.js";

const PREVIEW_WIDGET = "$$canvas-image-preview";
const STYLE_ID = "p3s-preview-size-style";

function installStyle() {
  if (document.getElementById(STYLE_ID)) return;
  const style = document.createElement("style");
  style.id = STYLE_ID;
  style.textContent = `
[data-p3s-keep-size] .image-preview { min-height: 0; }
[data-p3s-keep-size] .image-preview > div:first-child { position: relative; flex: 1 1 0; min-height: 0; }
[data-p3s-keep-size] .image-preview img { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: contain; }
`;
  document.head.append(style);
}

/** Mark the node's Vue element (when the Vue renderer shows it) for the stylesheet above. */
function markVueElement(node) {
  const element = document.querySelector(`[data-node-id="${node.id}"]`);
  if (element) element.dataset.p3sKeepSize = "1";
}

export function keepsSize(nodeData) {
  return String(nodeData?.category ?? "").startsWith("P3S") && nodeData.name !== "P3SPoints";
}

app.registerExtension({
  name: "p3s.previewSize",
  setup() {
    installStyle();
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!keepsSize(nodeData)) return;
    const addCustomWidget = nodeType.prototype.addCustomWidget;
    nodeType.prototype.addCustomWidget = function () {
      const widget = addCustomWidget.apply(this, arguments);
      if (widget?.name === PREVIEW_WIDGET && widget.computeLayoutSize) {
        widget.computeLayoutSize = () => ({ minHeight: 0, minWidth: 1 });
      }
      return widget;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function () {
      const result = onExecuted?.apply(this, arguments);
      markVueElement(this);
      return result;
    };
  },
});
