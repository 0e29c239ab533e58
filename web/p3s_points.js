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
//
// Files: this one wires the node (its menu entries and hooks) and registers the extension;
// p3s_points_editor.js holds the editor, p3s_points_draw.js its drawing, p3s_points_input.js its
// mouse handling, p3s_points_images.js the image loading and p3s_points_model.js the point model.

import { app } from "../../scripts/app.js";
import { PointsEditor, editors } from "./p3s_points_editor.js";

export { MESSAGES } from "./p3s_points_draw.js";

const NODE_TYPE = "P3SPoints";

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
