//! The app: providers, the sign-in gate and the routes.

import { Component, type ErrorInfo, type ReactNode } from "react";
import { BrowserRouter, Link, Navigate, Route, Routes, useParams } from "react-router";
import { I18nProvider, useI18n } from "../i18n";
import { SignIn } from "../auth/SignIn";
import { Shell } from "./Shell";
import { ServicesProvider, useSession, type Services } from "./services";

function NotFound() {
  const { t } = useI18n();
  return (
    <main className="centered">
      <p>{t("notfound")}</p>
      <Link to="/inbox">{t("notfound.back")}</Link>
    </main>
  );
}

/** `<PUBLIC_URL>/conversations/<id>`, the links in Slack alerts, opens the conversation. */
function ConversationLink() {
  const { id } = useParams();
  return <Navigate to={`/inbox/${id ?? ""}`} replace />;
}

/** While a page load asks the session cookie for the session. */
function Restoring() {
  const { t } = useI18n();
  return (
    <main className="centered" data-testid="restoring">
      <p role="status">{t("session.restoring")}</p>
    </main>
  );
}

/** Shows the sign-in screen in place of anything while nobody is signed in; the URL stays. */
function Gate() {
  const { user, restoring } = useSession();
  if (restoring) return <Restoring />;
  if (!user) return <SignIn />;
  return (
    <Routes>
      <Route path="/" element={<Navigate to="/inbox" replace />} />
      <Route path="/inbox" element={<Shell />} />
      <Route path="/inbox/:conversationId" element={<Shell />} />
      <Route path="/admin/*" element={<Shell />} />
      <Route path="/ops/*" element={<Shell />} />
      <Route path="/conversations/:id" element={<ConversationLink />} />
      <Route path="*" element={<NotFound />} />
    </Routes>
  );
}

function Crashed({ error }: { error: Error }) {
  const { t } = useI18n();
  return (
    <main className="centered" role="alert">
      <p>{t("error.generic", { message: error.message })}</p>
      <button type="button" onClick={() => window.location.reload()}>
        {t("error.reload")}
      </button>
    </main>
  );
}

/** A render error shows a way out instead of a blank page. */
class Boundary extends Component<{ children: ReactNode }, { error: Error | null }> {
  override state: { error: Error | null } = { error: null };
  static getDerivedStateFromError(error: Error) {
    return { error };
  }
  override componentDidCatch(error: Error, info: ErrorInfo) {
    console.error(error, info.componentStack);
  }
  override render() {
    return this.state.error ? <Crashed error={this.state.error} /> : this.props.children;
  }
}

export function App({ services }: { services: Services }) {
  return (
    <I18nProvider>
      <Boundary>
        <ServicesProvider services={services}>
          <BrowserRouter>
            <Gate />
          </BrowserRouter>
        </ServicesProvider>
      </Boundary>
    </I18nProvider>
  );
}
