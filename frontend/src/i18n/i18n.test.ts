import { describe, expect, it } from "vitest";
import { pickLang, translate } from "./index";
import { en } from "./en";
import { ru } from "./ru";

const placeholders = (s: string) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();

describe("strings", () => {
  it("picks the first of the browser's languages it has", () => {
    expect(pickLang(["ru-RU", "en"])).toBe("ru");
    expect(pickLang(["de-DE", "en-US"])).toBe("en");
    expect(pickLang(["fr"])).toBe("en");
  });

  it("has every English string in Russian, with the same placeholders", () => {
    for (const key of Object.keys(en) as Array<keyof typeof en>) {
      expect(ru[key], key).toBeTruthy();
      expect(placeholders(ru[key]), key).toEqual(placeholders(en[key]));
    }
  });

  it("fills in placeholders", () => {
    expect(translate("en", "list.unread", { count: 3 })).toBe("3 unread");
    expect(translate("ru", "signin.throttled", { seconds: 9 })).toBe("Слишком много попыток. Повторите через 9 с.");
  });
});
