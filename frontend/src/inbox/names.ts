//! How a conversation is named and its time shown in the list.

import type { Conversation } from "../api/types";

export function displayName(c: Conversation): string {
  const person = [c.contact_first_name, c.contact_last_name].filter(Boolean).join(" ").trim();
  if (person) return person;
  if (c.title.trim()) return c.title;
  if (c.contact_username) return `@${c.contact_username}`;
  return `Telegram ${c.tg_chat_id}`;
}

export function initials(name: string): string {
  const parts = name.replace(/^@/, "").split(/\s+/).filter(Boolean);
  return (parts.length > 1 ? parts[0]![0]! + parts[1]![0]! : (parts[0] ?? "?").slice(0, 2)).toUpperCase();
}

/** Today's times as hours and minutes, older ones as a date. */
export function shortTime(iso: string, locale: string, now: Date = new Date()): string {
  const d = new Date(iso);
  const sameDay = d.toDateString() === now.toDateString();
  return new Intl.DateTimeFormat(locale, sameDay ? { hour: "2-digit", minute: "2-digit" } : { day: "numeric", month: "short" }).format(d);
}
