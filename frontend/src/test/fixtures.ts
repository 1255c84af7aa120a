//! Test data: a conversation and a message as the API renders them.

import type { Conversation, Message } from "../api/types";

export function conv(over: Partial<Conversation> = {}): Conversation {
  return {
    id: "c1",
    tg_chat_id: 42,
    title: "",
    status: "open",
    last_message_at: "2026-01-01T10:00:00Z",
    created_at: "2026-01-01T09:00:00Z",
    unread_count: 0,
    assignee_id: null,
    contact_first_name: "Ann",
    contact_id: "p1",
    contact_last_name: null,
    contact_username: "ann",
    snoozed_until: null,
    ...over,
  };
}

export function msg(over: Partial<Message> = {}): Message {
  return {
    id: "m1",
    conversation_id: "c1",
    direction: "out",
    kind: "text",
    text: "hi",
    status: "queued",
    attempts: 0,
    created_at: "2026-01-01T10:00:00Z",
    attachments: [],
    author_id: "u1",
    author_name: "Ann",
    client_msg_id: "k1",
    edited_at: null,
    error: null,
    retry_at: null,
    sent_at: null,
    tg_message_id: null,
    deleted_at: null,
    read_at: null,
    change_kind: null,
    change_status: null,
    change_error: null,
    change_retry_at: null,
    ...over,
  };
}
