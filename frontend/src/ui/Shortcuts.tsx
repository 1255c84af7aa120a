//! Keyboard shortcuts for the common moves, and the list of them shown on `?`.

import { useEffect, useRef } from "react";
import { useI18n } from "../i18n";
import type { MessageKey } from "../i18n/en";

/** Actions the conversation pane performs when asked by a shortcut. */
export type PaneAction = "assign" | "resolve";
export const PANE_ACTION = "fastprep:action";

export const SHORTCUTS: ReadonlyArray<{ keys: string[]; what: MessageKey }> = [
  { keys: ["j"], what: "shortcuts.next" },
  { keys: ["k"], what: "shortcuts.prev" },
  { keys: ["/"], what: "shortcuts.search" },
  { keys: ["r"], what: "shortcuts.reply" },
  { keys: ["Ctrl", "Enter"], what: "shortcuts.send" },
  { keys: ["a"], what: "shortcuts.assign" },
  { keys: ["e"], what: "shortcuts.resolve" },
  { keys: ["Esc"], what: "shortcuts.escape" },
  { keys: ["?"], what: "shortcuts.help" },
];

function typing(target: EventTarget | null): boolean {
  const el = target as HTMLElement | null;
  if (!el) return false;
  return el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName);
}

export function useShortcuts(handlers: { openHelp(): void; move(step: number): void }): void {
  const ref = useRef(handlers);
  ref.current = handlers;
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.defaultPrevented || e.altKey || e.metaKey || e.ctrlKey) return;
      if (typing(e.target)) {
        if (e.key === "Escape") (e.target as HTMLElement).blur();
        return;
      }
      if (document.querySelector("dialog[open]")) return;
      const h = ref.current;
      const focus = (id: string) => {
        const el = document.getElementById(id);
        if (!el) return false;
        el.focus();
        return true;
      };
      const act = (a: PaneAction) => window.dispatchEvent(new CustomEvent<PaneAction>(PANE_ACTION, { detail: a }));
      let handled = true;
      switch (e.key) {
        case "?":
          h.openHelp();
          break;
        case "j":
          h.move(1);
          break;
        case "k":
          h.move(-1);
          break;
        case "/":
          handled = focus("search");
          break;
        case "r":
          handled = focus("composer");
          break;
        case "a":
          act("assign");
          break;
        case "e":
          act("resolve");
          break;
        default:
          handled = false;
      }
      if (handled) e.preventDefault();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, []);
}

export function ShortcutsDialog({ open, onClose }: { open: boolean; onClose(): void }) {
  const { t } = useI18n();
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (open && !d.open) d.showModal();
    if (!open && d.open) d.close();
  }, [open]);
  return (
    <dialog ref={ref} onClose={onClose} aria-labelledby="shortcuts-title" className="dialog">
      <h2 id="shortcuts-title">{t("shortcuts.title")}</h2>
      <table className="shortcuts">
        <tbody>
          {SHORTCUTS.map((s) => (
            <tr key={s.what}>
              <td>
                {s.keys.map((k, i) => (
                  <span key={k}>
                    {i > 0 && " + "}
                    <kbd>{k}</kbd>
                  </span>
                ))}
              </td>
              <td>{t(s.what)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <form method="dialog">
        <button type="submit" autoFocus>
          {t("shortcuts.close")}
        </button>
      </form>
    </dialog>
  );
}
