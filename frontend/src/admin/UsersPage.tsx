//! Users: the list, a new account, renaming one, changing its roles,
//! deactivating and reactivating it, and resetting someone's password.

import { useState, type FormEvent } from "react";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { unwrap } from "../api/client";
import type { components } from "../api/schema";
import { useServices, useSession } from "../app/services";
import { useI18n } from "../i18n";
import { Modal } from "../ui/Modal";
import { LoadError, Loading, failureText } from "../ui/pageStates";
import { RoleChecks } from "./RoleChecks";

type User = components["schemas"]["User"];
export const usersKey = ["admin", "users"] as const;
export const rolesKey = ["admin", "roles"] as const;

function NewUserForm({ onDone }: { onDone(u: User): void }) {
  const { t } = useI18n();
  const { api } = useServices();
  const qc = useQueryClient();
  const roles = useQuery({
    queryKey: rolesKey,
    queryFn: ({ signal }) => unwrap(api.GET("/api/roles", { signal })),
    retry: false,
  });
  const [email, setEmail] = useState("");
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [roleIds, setRoleIds] = useState<string[]>([]);
  const create = useMutation({
    mutationFn: () =>
      unwrap(api.POST("/api/users", { body: { email: email.trim(), display_name: name.trim(), password, role_ids: roleIds } })),
    onSuccess: (u) => {
      setPassword("");
      void qc.invalidateQueries({ queryKey: usersKey });
      onDone(u);
    },
  });
  function submit(e: FormEvent) {
    e.preventDefault();
    create.mutate();
  }
  return (
    <form className="stack" onSubmit={submit} data-testid="new-user">
      <label htmlFor="nu-email">{t("users.email")}</label>
      <input id="nu-email" type="email" required value={email} onChange={(e) => setEmail(e.target.value)} autoComplete="off" />
      <label htmlFor="nu-name">{t("users.name")}</label>
      <input id="nu-name" required maxLength={100} value={name} onChange={(e) => setName(e.target.value)} autoComplete="off" />
      <label htmlFor="nu-password">{t("users.password")}</label>
      <input
        id="nu-password"
        type="password"
        required
        minLength={12}
        maxLength={128}
        value={password}
        onChange={(e) => setPassword(e.target.value)}
        autoComplete="new-password"
        aria-describedby="nu-password-hint"
      />
      <p id="nu-password-hint" className="muted small">
        {t("users.password.hint")}
      </p>
      {roles.data && <RoleChecks roles={roles.data} value={roleIds} onChange={setRoleIds} legend={t("users.roles")} />}
      {create.isError && (
        <p className="form-error" role="alert">
          {t("users.create.failed", { message: failureText(create.error, t) })}
        </p>
      )}
      <div className="dialog-bar">
        <button type="submit" className="primary" disabled={create.isPending}>
          {t("users.create")}
        </button>
      </div>
    </form>
  );
}

function EditRoles({ user, onDone }: { user: User; onDone(u: User): void }) {
  const { t } = useI18n();
  const { api } = useServices();
  const qc = useQueryClient();
  const roles = useQuery({ queryKey: rolesKey, queryFn: ({ signal }) => unwrap(api.GET("/api/roles", { signal })), retry: false });
  const [roleIds, setRoleIds] = useState<string[]>(user.roles.map((r) => r.id));
  const save = useMutation({
    mutationFn: () => unwrap(api.PUT("/api/users/{id}/roles", { params: { path: { id: user.id } }, body: { role_ids: roleIds } })),
    onSuccess: (u) => {
      void qc.invalidateQueries({ queryKey: usersKey });
      void qc.invalidateQueries({ queryKey: rolesKey });
      onDone(u);
    },
  });
  if (roles.isPending) return <Loading />;
  if (roles.isError) return <LoadError error={roles.error} retry={() => void roles.refetch()} />;
  return (
    <form
      className="stack"
      onSubmit={(e) => {
        e.preventDefault();
        save.mutate();
      }}
    >
      <RoleChecks roles={roles.data} value={roleIds} onChange={setRoleIds} legend={t("users.roles_of", { name: user.display_name })} />
      {save.isError && (
        <p className="form-error" role="alert">
          {t("action.failed", { message: failureText(save.error, t) })}
        </p>
      )}
      <div className="dialog-bar">
        <button type="submit" className="primary" disabled={save.isPending}>
          {t("users.roles.save")}
        </button>
      </div>
    </form>
  );
}

function EditName({ user, onDone }: { user: User; onDone(u: User): void }) {
  const { t } = useI18n();
  const { api } = useServices();
  const qc = useQueryClient();
  const [name, setName] = useState(user.display_name);
  const save = useMutation({
    mutationFn: () =>
      unwrap(api.PATCH("/api/users/{id}", { params: { path: { id: user.id } }, body: { display_name: name.trim() } })),
    onSuccess: (u) => {
      void qc.invalidateQueries({ queryKey: usersKey });
      onDone(u);
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
      <label htmlFor="edit-name">{t("users.name")}</label>
      <input
        id="edit-name"
        required
        maxLength={100}
        value={name}
        onChange={(e) => setName(e.target.value)}
        autoComplete="off"
      />
      {save.isError && (
        <p className="form-error" role="alert">
          {t("action.failed", { message: failureText(save.error, t) })}
        </p>
      )}
      <div className="dialog-bar">
        <button type="submit" className="primary" disabled={save.isPending || !name.trim() || name.trim() === user.display_name}>
          {t("users.name.save")}
        </button>
      </div>
    </form>
  );
}

function ResetPassword({ user, onDone }: { user: User; onDone(): void }) {
  const { t } = useI18n();
  const { api } = useServices();
  const [password, setPassword] = useState("");
  const reset = useMutation({
    mutationFn: (pw: string) => unwrap(api.PATCH("/api/users/{id}", { params: { path: { id: user.id } }, body: { password: pw } })),
    onSuccess: onDone,
  });
  return (
    <form
      className="stack"
      onSubmit={(e) => {
        e.preventDefault();
        const pw = password;
        setPassword("");
        reset.mutate(pw);
      }}
    >
      <p>{t("users.reset.explain", { name: user.display_name })}</p>
      <label htmlFor="reset-password">{t("users.reset.new")}</label>
      <input
        id="reset-password"
        type="password"
        required
        minLength={12}
        maxLength={128}
        value={password}
        onChange={(e) => setPassword(e.target.value)}
        autoComplete="new-password"
      />
      {reset.isError && (
        <p className="form-error" role="alert">
          {t("action.failed", { message: failureText(reset.error, t) })}
        </p>
      )}
      <div className="dialog-bar">
        <button type="submit" className="primary" disabled={reset.isPending}>
          {t("users.reset.go")}
        </button>
      </div>
    </form>
  );
}

export function UsersPage() {
  const { t, dateTime } = useI18n();
  const { api } = useServices();
  const { user: me } = useSession();
  const qc = useQueryClient();
  const q = useQuery({ queryKey: usersKey, queryFn: ({ signal }) => unwrap(api.GET("/api/users", { signal })) });
  const [creating, setCreating] = useState(false);
  const [resetting, setResetting] = useState<User | null>(null);
  const [editing, setEditing] = useState<User | null>(null);
  const [renaming, setRenaming] = useState<User | null>(null);
  const [toggling, setToggling] = useState<User | null>(null);
  const [note, setNote] = useState<string | null>(null);
  const toggle = useMutation({
    mutationFn: (u: User) =>
      unwrap(api.PATCH("/api/users/{id}", { params: { path: { id: u.id } }, body: { is_active: !u.is_active } })),
    onSuccess: (u) => {
      setToggling(null);
      setNote(u.is_active ? t("users.reactivated", { name: u.display_name }) : t("users.deactivated", { name: u.display_name }));
      void qc.invalidateQueries({ queryKey: usersKey });
    },
  });

  return (
    <section className="page" aria-labelledby="users-title">
      <div className="page-bar">
        <h1 id="users-title">{t("nav.users")}</h1>
        <button type="button" className="primary" onClick={() => setCreating(true)}>
          {t("users.new")}
        </button>
      </div>
      <p className="status-line" role="status">
        {note}
      </p>
      {q.isPending ? (
        <Loading />
      ) : q.isError ? (
        <LoadError error={q.error} retry={() => void q.refetch()} />
      ) : q.data.length === 0 ? (
        <p className="state">{t("users.empty")}</p>
      ) : (
        <table className="grid" data-testid="users">
          <thead>
            <tr>
              <th scope="col">{t("users.name")}</th>
              <th scope="col">{t("users.email")}</th>
              <th scope="col">{t("users.roles")}</th>
              <th scope="col">{t("users.state")}</th>
              <th scope="col">{t("users.created")}</th>
              <th scope="col">
                <span className="visually-hidden">{t("page.actions")}</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {q.data.map((u) => (
              <tr key={u.id} data-testid="user-row" data-email={u.email} className={u.is_active ? "" : "inactive"}>
                <td>{u.display_name}</td>
                <td>{u.email}</td>
                <td>{u.roles.map((r) => r.name).join(", ") || "—"}</td>
                <td>{u.is_active ? t("users.active") : t("users.inactive")}</td>
                <td>{dateTime(u.created_at)}</td>
                <td className="row-actions">
                  <button type="button" className="small" onClick={() => setRenaming(u)} aria-label={t("users.name.edit", { name: u.display_name })}>
                    {t("users.name.short")}
                  </button>
                  <button type="button" className="small" onClick={() => setEditing(u)} aria-label={t("users.roles.edit", { name: u.display_name })}>
                    {t("users.roles.short")}
                  </button>
                  {u.id !== me?.id && (
                    <button type="button" className="small" onClick={() => setResetting(u)} aria-label={t("users.reset", { name: u.display_name })}>
                      {t("users.reset.short")}
                    </button>
                  )}
                  {u.id !== me?.id && (
                    <button
                      type="button"
                      className={`small ${u.is_active ? "danger" : ""}`}
                      onClick={() => setToggling(u)}
                      aria-label={u.is_active ? t("users.deactivate", { name: u.display_name }) : t("users.reactivate", { name: u.display_name })}
                    >
                      {u.is_active ? t("users.deactivate.go") : t("users.reactivate.go")}
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <Modal open={creating} onClose={() => setCreating(false)} title={t("users.new")} testId="new-user-dialog">
        <NewUserForm
          onDone={(u) => {
            setCreating(false);
            setNote(t("users.created_note", { email: u.email }));
          }}
        />
      </Modal>
      <Modal open={editing !== null} onClose={() => setEditing(null)} title={t("users.roles.title")} testId="roles-dialog">
        {editing && (
          <EditRoles
            user={editing}
            onDone={(u) => {
              setEditing(null);
              setNote(t("users.roles.done", { name: u.display_name }));
            }}
          />
        )}
      </Modal>
      <Modal open={renaming !== null} onClose={() => setRenaming(null)} title={t("users.name.title")} testId="name-dialog">
        {renaming && (
          <EditName
            user={renaming}
            onDone={(u) => {
              setNote(t("users.name.done", { old: renaming.display_name, name: u.display_name }));
              setRenaming(null);
            }}
          />
        )}
      </Modal>
      <Modal open={resetting !== null} onClose={() => setResetting(null)} title={t("users.reset.title")} testId="reset-dialog">
        {resetting && (
          <ResetPassword
            user={resetting}
            onDone={() => {
              setNote(t("users.reset.done", { name: resetting.display_name }));
              setResetting(null);
            }}
          />
        )}
      </Modal>
      <Modal open={toggling !== null} onClose={() => setToggling(null)} title={t("users.confirm.title")} testId="toggle-dialog">
        {toggling && (
          <>
            <p>
              {toggling.is_active
                ? t("users.confirm.deactivate", { name: toggling.display_name })
                : t("users.confirm.reactivate", { name: toggling.display_name })}
            </p>
            {toggle.isError && (
              <p className="form-error" role="alert">
                {t("action.failed", { message: failureText(toggle.error, t) })}
              </p>
            )}
            <div className="dialog-bar">
              <button type="button" onClick={() => setToggling(null)}>
                {t("page.cancel")}
              </button>
              <button
                type="button"
                className={toggling.is_active ? "danger" : "primary"}
                disabled={toggle.isPending}
                onClick={() => toggle.mutate(toggling)}
              >
                {toggling.is_active ? t("users.deactivate.go") : t("users.reactivate.go")}
              </button>
            </div>
          </>
        )}
      </Modal>
    </section>
  );
}
