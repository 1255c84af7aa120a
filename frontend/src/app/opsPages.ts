//! The ops pages, one chunk loaded on first use.
export { OutboxPage } from "../ops/OutboxPage";
export { DlqPage } from "../ops/DlqPage";
export { TelegramPage } from "../ops/TelegramPage";
