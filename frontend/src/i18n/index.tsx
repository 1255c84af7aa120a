//! English and Russian strings: the browser's language picks one, the header
//! switches it (remembered in localStorage), and `t` fills in `{names}`.

import { createContext, useCallback, useContext, useMemo, useState, type ReactNode } from "react";
import { en, type MessageKey } from "./en";
import { ru } from "./ru";

export type Lang = "en" | "ru";
export const LANGS: readonly Lang[] = ["en", "ru"];
const DICTS: Record<Lang, Record<MessageKey, string>> = { en, ru };
const STORE_KEY = "fastprep.lang";

/** The first of the browser's languages we have, else English. */
export function pickLang(preferred: readonly string[]): Lang {
  for (const tag of preferred) {
    const base = tag.toLowerCase().split("-")[0];
    if (base === "ru" || base === "en") return base;
  }
  return "en";
}

export function translate(lang: Lang, key: MessageKey, vars?: Record<string, string | number>): string {
  const text = DICTS[lang][key] ?? en[key];
  if (!vars) return text;
  return text.replace(/\{(\w+)\}/g, (whole, name: string) => (name in vars ? String(vars[name]) : whole));
}

function initialLang(): Lang {
  try {
    const saved = localStorage.getItem(STORE_KEY);
    if (saved === "en" || saved === "ru") return saved;
  } catch {
    // Storage may be blocked; the browser's language still decides.
  }
  return pickLang(navigator.languages ?? [navigator.language]);
}

export type T = (key: MessageKey, vars?: Record<string, string | number>) => string;

interface I18n {
  lang: Lang;
  setLang(lang: Lang): void;
  t: T;
  /** Intl formatting in the chosen language. */
  time(iso: string): string;
  dateTime(iso: string): string;
}

const Ctx = createContext<I18n | null>(null);

export function I18nProvider({ children }: { children: ReactNode }) {
  const [lang, setLangState] = useState<Lang>(initialLang);
  const setLang = useCallback((next: Lang) => {
    setLangState(next);
    try {
      localStorage.setItem(STORE_KEY, next);
    } catch {
      // Not remembered; still switched.
    }
  }, []);
  const value = useMemo<I18n>(() => {
    const locale = lang === "ru" ? "ru-RU" : "en-GB";
    const timeFmt = new Intl.DateTimeFormat(locale, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    const dateFmt = new Intl.DateTimeFormat(locale, { dateStyle: "medium", timeStyle: "short" });
    document.documentElement.lang = lang;
    return {
      lang,
      setLang,
      t: (key, vars) => translate(lang, key, vars),
      time: (iso) => timeFmt.format(new Date(iso)),
      dateTime: (iso) => dateFmt.format(new Date(iso)),
    };
  }, [lang, setLang]);
  return <Ctx.Provider value={value}>{children}</Ctx.Provider>;
}

export function useI18n(): I18n {
  const v = useContext(Ctx);
  if (!v) throw new Error("useI18n outside I18nProvider");
  return v;
}
