//! Names for the generated OpenAPI types (`schema.d.ts`, from docs/openapi.json)
//! and the WebSocket frames of docs/WEBSOCKET.md, which the OpenAPI document
//! does not describe.

import type { components } from "./schema";

type S = components["schemas"];
export type Conversation = S["Conversation"];
export type ConversationStatus = S["ConversationStatus"];
export type Message = S["Message"];
export type MessageFile = S["MessageFile"];
export type Me = S["Me"];
export type TokensOut = S["TokensOut"];
export type PageConversation = S["Page_Conversation"];
export type PageMessage = S["Page_Message"];
export type ErrorBody = S["ErrorBody"];

/** Delivery states of a reply, as `message.status` carries them. */
export type DeliveryStatus = "queued" | "sending" | "sent" | "retrying" | "failed";

export interface StatusFrameData {
  message_id: string;
  conversation_id: string;
  status: DeliveryStatus;
  tg_message_id: number | null;
  error: string | null;
  attempt: number;
  retry_at: string | null;
}

export interface ConversationChange {
  conversation_id: string;
  changed: Partial<Pick<Conversation, "assignee_id" | "status" | "snoozed_until">>;
}

export interface EpData {
  permissions: string[];
  perm_version: number;
  token_current: boolean;
}

/** The event frames; control frames are handled by the socket client. */
export type EventFrame =
  | { id: number; type: "message.created"; data: Message }
  | { id: number; type: "message.updated"; data: Message }
  | { id: number; type: "message.status"; data: StatusFrameData }
  | { id: number; type: "conversation.updated"; data: ConversationChange };

export type ServerFrame =
  | EventFrame
  | { id: number; type: "ep.update"; data: EpData }
  | { id: number; type: "resync"; data: Record<string, never> }
  | { id: number; type: "pong"; data: Record<string, never> }
  | { id: number; type: "error"; data: { code: string; message: string } };
