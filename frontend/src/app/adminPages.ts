//! The admin pages, one chunk loaded on first use.
export { UsersPage } from "../admin/UsersPage";
export { RolesPage } from "../admin/RolesPage";
export { AuditPage } from "../admin/AuditPage";
