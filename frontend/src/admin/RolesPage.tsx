//! Roles and the permission matrix: one column per role, one row per
//! permission of the catalogue; a box ticked or cleared is saved at once.
//! A role of one's own making can be renamed and deleted from its column.

import { useState } from "react";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { unwrap } from "../api/client";
import type { components } from "../api/schema";
import { useServices } from "../app/services";
import { useI18n } from "../i18n";
import { LoadError, Loading, failureText } from "../ui/pageStates";
import { Modal } from "../ui/Modal";
import { groupByArea, withPermission } from "./matrix";
import { rolesKey } from "./UsersPage";

type Role = components["schemas"]["Role"];
type Perm = components["schemas"]["Perm"];

function EditRole({ role, onDone }: { role: Role; onDone(r: Role): void }) {
  const { t } = useI18n();
  const { api } = useServices();
  const qc = useQueryClient();
  const [name, setName] = useState(role.name);
  const [description, setDescription] = useState(role.description);
  const save = useMutation({
    mutationFn: () =>
      unwrap(
        api.PATCH("/api/roles/{id}", {
          params: { path: { id: role.id } },
          body: { name: name.trim(), description: description.trim() },
        }),
      ),
    onSuccess: (r) => {
      qc.setQueryData<Role[]>(rolesKey, (old) => old?.map((x) => (x.id === r.id ? r : x)));
      void qc.invalidateQueries({ queryKey: ["admin", "users"] });
      onDone(r);
    },
  });
  return (
    <form
      className="stack"
      onSubmit={(e) => {
        e.preventDefault();
        save.mutate();
      }}
    >
      <label htmlFor="edit-role-name">{t("roles.name")}</label>
      <input
        id="edit-role-name"
        required
        pattern="[A-Za-z0-9_.\-]{1,64}"
        value={name}
        onChange={(e) => setName(e.target.value)}
        aria-describedby="edit-role-name-hint"
        autoComplete="off"
      />
      <span id="edit-role-name-hint" className="muted small">
        {t("roles.name.hint")}
      </span>
      <label htmlFor="edit-role-desc">{t("roles.description")}</label>
      <input id="edit-role-desc" value={description} onChange={(e) => setDescription(e.target.value)} autoComplete="off" />
      {save.isError && (
        <p className="form-error" role="alert">
          {t("action.failed", { message: failureText(save.error, t) })}
        </p>
      )}
      <div className="dialog-bar">
        <button type="submit" className="primary" disabled={save.isPending || !name.trim()}>
          {t("roles.rename.save")}
        </button>
      </div>
    </form>
  );
}

function DeleteRole({ role, onDone, onCancel }: { role: Role; onDone(): void; onCancel(): void }) {
  const { t } = useI18n();
  const { api } = useServices();
  const qc = useQueryClient();
  const remove = useMutation({
    mutationFn: () => unwrap(api.DELETE("/api/roles/{id}", { params: { path: { id: role.id } } })),
    onSuccess: () => {
      qc.setQueryData<Role[]>(rolesKey, (old) => old?.filter((x) => x.id !== role.id));
      void qc.invalidateQueries({ queryKey: rolesKey });
      void qc.invalidateQueries({ queryKey: ["admin", "users"] });
      onDone();
    },
  });
  return (
    <>
      <p>{t("roles.delete.confirm", { name: role.name, count: role.user_count })}</p>
      {remove.isError && (
        <p className="form-error" role="alert">
          {t("action.failed", { message: failureText(remove.error, t) })}
        </p>
      )}
      <div className="dialog-bar">
        <button type="button" onClick={onCancel}>
          {t("page.cancel")}
        </button>
        <button type="button" className="danger" disabled={remove.isPending} onClick={() => remove.mutate()}>
          {t("roles.delete.go")}
        </button>
      </div>
    </>
  );
}

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
  const [editing, setEditing] = useState<Role | null>(null);
  const [deleting, setDeleting] = useState<Role | null>(null);

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
                    {!r.is_system && (
                      <div className="col-actions">
                        <button type="button" className="small" onClick={() => setEditing(r)} aria-label={t("roles.rename", { name: r.name })}>
                          {t("roles.rename.short")}
                        </button>
                        <button type="button" className="small danger" onClick={() => setDeleting(r)} aria-label={t("roles.delete", { name: r.name })}>
                          {t("roles.delete.short")}
                        </button>
                      </div>
                    )}
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
      <Modal open={editing !== null} onClose={() => setEditing(null)} title={t("roles.rename.title")} testId="role-dialog">
        {editing && (
          <EditRole
            role={editing}
            onDone={(r) => {
              setEditing(null);
              setNote(t("roles.renamed", { name: r.name }));
            }}
          />
        )}
      </Modal>
      <Modal open={deleting !== null} onClose={() => setDeleting(null)} title={t("roles.delete.title")} testId="delete-role-dialog">
        {deleting && (
          <DeleteRole
            role={deleting}
            onCancel={() => setDeleting(null)}
            onDone={() => {
              setNote(t("roles.deleted", { name: deleting.name }));
              setDeleting(null);
            }}
          />
        )}
      </Modal>
    </section>
  );
}
