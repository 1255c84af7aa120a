//! The audit log's filters, kept in the URL.

export interface AuditFilters {
  target_type: string | null;
  target_id: string | null;
  actor_id: string | null;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function auditFilters(params: URLSearchParams): AuditFilters {
  const get = (k: string) => {
    const v = params.get(k)?.trim();
    return v ? v : null;
  };
  const actor = get("actor_id");
  return { target_type: get("target_type"), target_id: get("target_id"), actor_id: actor && UUID.test(actor) ? actor : null };
}

/** The query of `GET /api/audit` for these filters (unset ones left out). */
export function auditQuery(f: AuditFilters): { target_type?: string; target_id?: string; actor_id?: string } {
  return {
    ...(f.target_type ? { target_type: f.target_type } : {}),
    ...(f.target_id ? { target_id: f.target_id } : {}),
    ...(f.actor_id ? { actor_id: f.actor_id } : {}),
  };
}
