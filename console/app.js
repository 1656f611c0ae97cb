// The console's shell: sign-in, navigation by role, and the hash routes
//   #/account/<user or org>   #/partner/<provider>   #/operator
import { api, session } from "./api.js";
import { h } from "./dom.js";
import { accountPage } from "./pages/account.js";
import { operatorPage } from "./pages/operator.js";
import { partnerPage } from "./pages/partner.js";

const byId = (id) => document.getElementById(id);
let me = null; // GET /v1/me: {user, admin, orgs: [{org, role, providerIds}]}

function links() {
  if (me.admin) return [["#/operator", "Operations"]];
  const orgs = me.orgs.filter((o) => o.role === "admin").map((o) => [`#/account/${encodeURIComponent(o.org)}`, `Org ${o.org}`]);
  const providers = me.orgs
    .filter((o) => o.role === "write" || o.role === "admin")
    .flatMap((o) => o.providerIds.map((p) => [`#/partner/${encodeURIComponent(p)}`, `Provider ${p}`]));
  return [[`#/account/${encodeURIComponent(me.user)}`, "My usage"], ...orgs, ...providers];
}

function renderNav() {
  const current = location.hash;
  byId("nav").replaceChildren(...links().map(([href, label]) => h("a", { href, "aria-current": href === current ? "page" : null }, label)));
  byId("who").textContent = me.admin ? "Signed in with the admin token" : `Signed in as ${me.user}`;
}

function page(route, name) {
  if (route === "operator" && me.admin) return operatorPage();
  if (route === "partner" && name) return partnerPage(name);
  if (route === "account" && name && !me.admin) return accountPage(me, name);
  return null;
}

function show() {
  if (!me) return;
  const [, route, ...rest] = location.hash.split("/");
  const name = decodeURIComponent(rest.join("/"));
  const content = page(route, name);
  if (content === null) {
    location.replace(links()[0][0]);
    return;
  }
  renderNav();
  byId("page").replaceChildren(...content);
  byId("page").querySelector("h1").focus();
}

async function signedIn() {
  me = await api("GET", "/v1/me");
  byId("sign-in").hidden = true;
  byId("sign-out").hidden = false;
  show();
}

function signOut(message = "") {
  session.signOut();
  me = null;
  byId("page").replaceChildren();
  byId("nav").replaceChildren();
  byId("who").textContent = "";
  byId("sign-out").hidden = true;
  byId("sign-in").hidden = false;
  byId("sign-in-error").textContent = message;
  byId("token").value = "";
  byId("token").focus();
}

byId("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  session.signIn(byId("token").value.trim());
  byId("token").value = "";
  try {
    await signedIn();
  } catch (error) {
    signOut(error.status === 401 ? "That token was not accepted." : error.message);
  }
});
byId("sign-out").addEventListener("click", () => signOut());
window.addEventListener("switchboard:unauthorized", () => signOut("Your token is no longer accepted: sign in again."));
window.addEventListener("hashchange", show);

if (session.token) signedIn().catch((error) => signOut(error.message));
else signOut();
