//! One error type for every failed call: the API's `{"error": {code, message,
//! request_id}}`, or a network failure (status 0).

export class ApiFailure extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly requestId?: string,
    readonly retryAfter?: number,
  ) {
    super(message);
    this.name = "ApiFailure";
  }

  /** The request never got an answer (offline, DNS, refused, aborted). */
  get isNetwork(): boolean {
    return this.status === 0;
  }

  static network(cause: unknown): ApiFailure {
    const text = cause instanceof Error ? cause.message : String(cause);
    return new ApiFailure(0, "network", text);
  }

  /** Reads an error answer; a body that is not the API's envelope still gives a code. */
  static async fromResponse(res: Response, body?: unknown): Promise<ApiFailure> {
    let parsed = body;
    if (parsed === undefined) {
      try {
        parsed = await res.clone().json();
      } catch {
        parsed = undefined;
      }
    }
    const detail = (parsed as { error?: { code?: string; message?: string; request_id?: string } } | undefined)
      ?.error;
    const retry = Number(res.headers.get("retry-after"));
    return new ApiFailure(
      res.status,
      detail?.code ?? `http_${res.status}`,
      detail?.message ?? res.statusText,
      detail?.request_id,
      Number.isFinite(retry) && retry > 0 ? retry : undefined,
    );
  }
}
