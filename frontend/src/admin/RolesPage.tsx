//! Roles and the permission matrix: one column per role, one row per
//! permission of the catalogue; a box ticked or cleared is saved at once.

import { useState } from "react";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { unwrap } from "../api/client";
import type { components } from "../api/schema";
import { useServices } from "../app/services";
import { useI18n } from "../i18n";
import { LoadError, Loading, failureText } from "../ui/pageStates";
import { groupByArea, withPermission } from "./matrix";
import { rolesKey } from "./UsersPage";

type Role = components["schemas"]["Role"];
type Perm = components["schemas"]["Perm"];

export function RolesPage() {
  const { t } = useI18n();
  const { api } = useServices();
  const qc = useQueryClient();
  const roles = useQuery({ queryKey: rolesKey, queryFn: ({ signal }) => unwrap(api.GET("/api/roles", { signal })) });
  const catalogue = useQuery({
    queryKey: ["admin", "permissions"],
    queryFn: ({ signal }) => unwrap(api.GET("/api/permissions", { signal })),
    staleTime: Infinity,
  });
  const [note, setNote] = useState<string | null>(null);
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");

  const save = useMutation({
    mutationFn: (v: { role: Role; permissions: string[] }) =>
      unwrap(
        api.PUT("/api/roles/{id}/permissions", {
          params: { path: { id: v.role.id } },
          body: { permissions: v.permissions as Perm[] },
        }),
      ),
    // The box shows its new state at once; a refusal puts the role back as it was.
    onMutate: (v) => {
      setNote(null);
      qc.setQueryData<Role[]>(rolesKey, (old) =>
        old?.map((r) => (r.id === v.role.id ? { ...r, permissions: v.permissions as Perm[] } : r)),
      );
    },
    onSuccess: (role) => {
      qc.setQueryData<Role[]>(rolesKey, (old) => old?.map((r) => (r.id === role.id ? role : r)));
      setNote(t("roles.saved", { name: role.name }));
    },
    onError: (e, v) => {
      qc.setQueryData<Role[]>(rolesKey, (old) => old?.map((r) => (r.id === v.role.id ? v.role : r)));
      setNote(t("roles.save_failed", { name: v.role.name, message: failureText(e, t) }));
    },
  });
  const create = useMutation({
    mutationFn: () =>
      unwrap(api.POST("/api/roles", { body: { name: name.trim(), description: description.trim(), permissions: [] } })),
    onSuccess: (role) => {
      setName("");
      setDescription("");
      setNote(t("roles.created", { name: role.name }));
      void qc.invalidateQueries({ queryKey: rolesKey });
    },
  });

  const order = catalogue.data?.map((p) => p.key) ?? [];
  const pendingKey = save.isPending ? `${save.variables.role.id}` : null;

  return (
    <section className="page" aria-labelledby="roles-title">
      <h1 id="roles-title">{t("nav.roles")}</h1>
      <p className="status-line" role="status" data-testid="roles-note">
        {note}
      </p>
      {roles.isPending || catalogue.isPending ? (
        <Loading />
      ) : roles.isError ? (
        <LoadError error={roles.error} retry={() => void roles.refetch()} />
      ) : catalogue.isError ? (
        <LoadError error={catalogue.error} retry={() => void catalogue.refetch()} />
      ) : (
        <div className="matrix-scroll">
          <table className="grid matrix" data-testid="matrix">
            <caption className="visually-hidden">{t("roles.matrix")}</caption>
            <thead>
              <tr>
                <th scope="col">{t("roles.permission")}</th>
                {roles.data.map((r) => (
                  <th scope="col" key={r.id} data-testid="role-col" data-role={r.name}>
                    <div>{r.name}</div>
                    <div className="muted small">
                      {t("roles.users", { count: r.user_count })}
                      {r.is_system ? ` · ${t("roles.system")}` : ""}
                    </div>
                  </th>
                ))}
              </tr>
            </thead>
            {groupByArea(catalogue.data).map(([area, perms]) => (
              <tbody key={area}>
                {perms.map((p) => (
                  <tr key={p.key}>
                    <th scope="row">
                      <code>{p.key}</code>
                      <div className="muted small">{p.description}</div>
                    </th>
                    {roles.data.map((r) => {
                      const on = r.permissions.includes(p.key as Perm);
                      return (
                        <td key={r.id} className="cell">
                          <input
                            type="checkbox"
                            checked={on}
                            disabled={pendingKey === r.id}
                            aria-label={t("roles.cell", { role: r.name, permission: p.key })}
                            data-role={r.name}
                            data-permission={p.key}
                            onChange={(e) =>
                              save.mutate({ role: r, permissions: withPermission(r.permissions, p.key, e.target.checked, order) })
                            }
                          />
                        </td>
                      );
                    })}
                  </tr>
                ))}
              </tbody>
            ))}
          </table>
        </div>
      )}
      <form
        className="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          create.mutate();
        }}
      >
        <h2>{t("roles.new")}</h2>
        <label htmlFor="role-name">{t("roles.name")}</label>
        <input id="role-name" required pattern="[A-Za-z0-9_.\-]{1,64}" value={name} onChange={(e) => setName(e.target.value)} aria-describedby="role-name-hint" />
        <span id="role-name-hint" className="muted small">
          {t("roles.name.hint")}
        </span>
        <label htmlFor="role-desc">{t("roles.description")}</label>
        <input id="role-desc" value={description} onChange={(e) => setDescription(e.target.value)} />
        <button type="submit" disabled={create.isPending}>
          {t("roles.create")}
        </button>
        {create.isError && (
          <p className="form-error" role="alert">
            {t("action.failed", { message: failureText(create.error, t) })}
          </p>
        )}
      </form>
    </section>
  );
}
