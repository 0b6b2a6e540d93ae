/** The error envelope every API route answers with: `{error: {code, message, fields?}}`. */
export interface ErrorEnvelope {
  error: { code: string; message: string; fields?: Record<string, string> }
}

/**
 * One typed error for every failed API call, so pages branch on `code`/`status`
 * and show `fields` inline instead of parsing axios or fetch internals.
 */
export class ApiError extends Error {
  readonly status: number
  readonly code: string
  readonly fields: Record<string, string>

  constructor(status: number, code: string, message: string, fields?: Record<string, string>) {
    super(message)
    this.name = 'ApiError'
    this.status = status
    this.code = code
    this.fields = fields ?? {}
  }

  get isValidation(): boolean {
    return this.status === 422
  }
}

export function isErrorEnvelope(body: unknown): body is ErrorEnvelope {
  if (typeof body !== 'object' || body === null || !('error' in body)) return false
  const e = (body as { error: unknown }).error
  return typeof e === 'object' && e !== null && typeof (e as { code?: unknown }).code === 'string'
}

/** Builds an ApiError from an HTTP status and a (possibly non-envelope) body. */
export function toApiError(status: number, body: unknown, fallback?: string): ApiError {
  if (isErrorEnvelope(body)) {
    const { code, message, fields } = body.error
    return new ApiError(status, code, message || code, fields)
  }
  if (status === 0) return new ApiError(0, 'network_error', fallback ?? 'Network error')
  const text = typeof body === 'string' && body.trim() ? body.trim().slice(0, 300) : undefined
  return new ApiError(status, `http_${status}`, text ?? fallback ?? `HTTP ${status}`)
}

/** Whatever was thrown, as a message a page can show. */
export function errorMessage(err: unknown): string {
  if (err instanceof ApiError) return err.message
  if (err instanceof Error) return err.message
  return String(err)
}
