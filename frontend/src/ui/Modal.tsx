//! A modal dialog (the native `<dialog>`): focus stays inside, Esc closes it.

import { useEffect, useRef, type ReactNode } from "react";

export function Modal({
  open,
  onClose,
  title,
  children,
  testId,
}: {
  open: boolean;
  onClose(): void;
  title: string;
  children: ReactNode;
  testId?: string;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (open && !d.open) d.showModal();
    if (!open && d.open) d.close();
  }, [open]);
  const titleId = `modal-${testId ?? "x"}-title`;
  return (
    <dialog ref={ref} onClose={onClose} aria-labelledby={titleId} className="dialog" data-testid={testId}>
      <h2 id={titleId}>{title}</h2>
      {open && children}
    </dialog>
  );
}
