//! The states every admin and ops page shows the same way.

import { useI18n } from "../i18n";
import { ApiFailure } from "../api/failure";

export function failureText(e: unknown, t: ReturnType<typeof useI18n>["t"]): string {
  if (e instanceof ApiFailure) {
    if (e.isNetwork) return t("page.offline");
    if (e.status === 403) return t("page.forbidden_call");
    if (e.status === 503) return t("page.unavailable");
    return e.message || e.code;
  }
  return e instanceof Error ? e.message : String(e);
}

export function Loading({ what }: { what?: string }) {
  const { t } = useI18n();
  return (
    <p className="state" role="status">
      {what ?? t("page.loading")}
    </p>
  );
}

export function LoadError({ error, retry }: { error: unknown; retry(): void }) {
  const { t } = useI18n();
  return (
    <div className="state error" role="alert">
      <p>{t("page.error", { message: failureText(error, t) })}</p>
      <button type="button" onClick={retry}>
        {t("list.retry")}
      </button>
    </div>
  );
}

export function Forbidden() {
  const { t } = useI18n();
  return (
    <section className="page" data-testid="page-forbidden">
      <h1>{t("page.forbidden.title")}</h1>
      <p>{t("page.forbidden")}</p>
    </section>
  );
}
