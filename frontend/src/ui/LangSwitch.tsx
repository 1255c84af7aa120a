//! The language switch (English / Русский).

import { LANGS, useI18n, type Lang } from "../i18n";

const NAMES: Record<Lang, string> = { en: "English", ru: "Русский" };

export function LangSwitch() {
  const { lang, setLang, t } = useI18n();
  return (
    <label className="lang">
      <span className="visually-hidden">{t("lang.label")}</span>
      <select value={lang} onChange={(e) => setLang(e.target.value as Lang)} aria-label={t("lang.label")}>
        {LANGS.map((l) => (
          <option key={l} value={l} lang={l}>
            {NAMES[l]}
          </option>
        ))}
      </select>
    </label>
  );
}
