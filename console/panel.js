// A page section that loads its own data: its heading at once, its content when the API answered,
// or the API's error in its place (a route this server does not have says so plainly).
import { describe, h } from "./dom.js";

export function section(title, id) {
  const heading = h("h2", { id: `${id}-title` }, title);
  return h("section", { "aria-labelledby": heading.id, id }, heading);
}

/** A section whose body is built by `build` (async, answers Nodes); its `reload()` builds it again. */
export function panel(title, id, build) {
  const element = section(title, id);
  const body = h("div", { "aria-busy": "true" }, h("p", { class: "hint" }, "Loading…"));
  element.append(body);
  const reload = async () => {
    body.setAttribute("aria-busy", "true");
    try {
      body.replaceChildren(...[await build(reload)].flat());
    } catch (error) {
      body.replaceChildren(h("p", { class: "error", role: "alert" }, describe(error)));
    }
    body.setAttribute("aria-busy", "false");
  };
  element.reload = reload;
  reload();
  return element;
}
