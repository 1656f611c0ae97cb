// The signed-in user's API tokens: names and hints (never a secret), create (its secret is
// shown once, here), revoke.
import { allPages, api, seg } from "../api.js";
import { announce, attempt, errorBox, field, h, table } from "../dom.js";
import { dateTime } from "../format.js";
import { panel } from "../panel.js";

export function tokensPanel(me) {
  const created = h("div", { "aria-live": "polite" });
  return panel("API tokens", "tokens", async (reload) => {
    const { apiTokens } = await allPages("/v1/me/tokens", "apiTokens");
    const alert = errorBox();
    const revoke = (token) =>
      attempt(alert, async () => {
        if (!window.confirm(`Revoke token ${token.name}? Programs using it stop working at once.`)) return;
        await api("DELETE", `/v1/me/tokens/${seg(token.name)}`);
        announce(`Token ${token.name} revoked.`);
        await reload();
      });
    const columns = [
      { label: "Name", cell: (t) => t.name },
      { label: "Ends with", cell: (t) => (t.suffix ? `…${t.suffix}` : "—") },
      { label: "Created", cell: (t) => dateTime(t.createTime) },
      { label: "Actions", className: "actions", cell: (t) => h("button", { type: "button", class: "danger", "aria-label": `Revoke token ${t.name}`, onclick: () => revoke(t) }, "Revoke") },
    ];
    return [table(`Tokens of ${me.user}`, columns, apiTokens, "No tokens."), alert, createForm(reload, created)];
  });
}

function createForm(reload, created) {
  const name = h("input", { id: "token-name", name: "name", type: "text", autocomplete: "off", required: true, maxlength: "96", pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]*" });
  const alert = errorBox();
  const form = h(
    "form",
    {
      class: "card narrow",
      "aria-label": "Create a token",
      onsubmit: (event) => {
        event.preventDefault();
        attempt(alert, async () => {
          const answer = await api("POST", "/v1/me/tokens", { name: name.value });
          created.replaceChildren(
            h("p", {}, `Token ${answer.apiToken.name} created. Copy it now: it is not shown again.`),
            h("p", { class: "secret", "data-new-token": "" }, answer.token),
          );
          name.value = "";
          await reload();
          announce(`Token ${answer.apiToken.name} created.`);
        });
      },
    },
    field("New token name", name, "Letters, digits, '.', '_' and '-'."),
    h("button", { type: "submit" }, "Create token"),
    alert,
    created,
  );
  return form;
}
