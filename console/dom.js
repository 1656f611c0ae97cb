// A tiny element builder. Text is always a text node (never parsed as HTML), so nothing the API
// answers can inject markup into the page.

export function h(tag, props = {}, ...children) {
  return fill(document.createElement(tag), props, children);
}

const SVG = "http://www.w3.org/2000/svg";

export function svg(tag, props = {}, ...children) {
  return fill(document.createElementNS(SVG, tag), props, children);
}

function fill(element, props, children) {
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else element.setAttribute(key === "className" ? "class" : key, value === true ? "" : String(value));
  }
  element.append(...children.flat(Infinity).filter((c) => c !== undefined && c !== null && c !== false));
  return element;
}

/** A table (scrolling on its own in a narrow window). columns: [{label, cell: row => text|Node, num}] */
export function table(caption, columns, rows, empty = "Nothing yet.") {
  const head = h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)));
  const body = rows.length
    ? rows.map((row) => h("tr", {}, columns.map((c) => h("td", { class: c.className || (c.num ? "num" : null) }, c.cell(row)))))
    : [h("tr", {}, h("td", { colspan: columns.length, class: "empty" }, empty))];
  return h("div", { class: "table-wrap" }, h("table", {}, h("caption", {}, caption), h("thead", {}, head), h("tbody", {}, body)));
}

/** A definition list of figures: [[label, value, testId]] */
export function figures(label, items) {
  return h(
    "dl",
    { class: "figures", "aria-label": label },
    items.map(([term, value, id]) => h("div", {}, h("dt", {}, term), h("dd", { "data-figure": id }, value))),
  );
}

/** A labelled input: the label's for= names the input's id. */
export function field(label, input, hint) {
  const hintId = hint ? `${input.id}-hint` : null;
  if (hintId) input.setAttribute("aria-describedby", hintId);
  return h("div", {}, h("label", { for: input.id }, label), input, hint ? h("p", { class: "hint", id: hintId }, hint) : null);
}

export function announce(text) {
  document.getElementById("status").textContent = text;
}

/** Runs an action from a form or button, showing its error in the given alert element. */
export async function attempt(alert, action) {
  alert.textContent = "";
  try {
    await action();
  } catch (error) {
    alert.textContent = describe(error);
  }
}

/** What went wrong, in words; a route this server does not have says so plainly. */
export function describe(error) {
  return error.code === "route_not_found" ? "This server does not offer this yet." : error.message;
}

export function errorBox() {
  return h("p", { class: "error", role: "alert" });
}
