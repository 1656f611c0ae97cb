// An org's members and their roles (for the org's admins).
import { allPages, seg } from "../api.js";
import { h, table } from "../dom.js";
import { panel } from "../panel.js";

export function membersPanel(org) {
  return panel("Members", "members", async () => {
    const { members } = await allPages(`/v1/orgs/${seg(org)}/members`, "members");
    const columns = [
      { label: "User", cell: (m) => m.user },
      { label: "Role", cell: (m) => h("span", { class: "badge" }, m.role) },
    ];
    return table(`Members of ${org}`, columns, members, "No members.");
  });
}
