import axios from 'axios'
import { ApiError, errorMessage, toApiError } from './errors'
import type { TokenAnswer } from './types'

/**
 * The bridge between the transport (axios, fetch-based SSE) and the auth store: the transport
 * reads the access token and asks for one refresh; the store decides what a session is.
 * Kept apart from the store so the transport has no import cycle with Pinia or the router.
 */
export interface SessionHooks {
  getAccessToken(): string | null
  /** A refresh (or login) produced a new access token. */
  onTokens(answer: TokenAnswer): void
  /** The refresh cookie is gone or rejected: forget the session and go to login. */
  onSessionLost(): void
}

let hooks: SessionHooks = {
  getAccessToken: () => null,
  onTokens: () => {},
  onSessionLost: () => {},
}

export function configureSession(h: SessionHooks): void {
  hooks = h
}

export function accessToken(): string | null {
  return hooks.getAccessToken()
}

/**
 * A client without interceptors for the cookie-based auth routes: a 401 from login or refresh
 * is an answer, never a reason to refresh.
 */
export const authClient = axios.create({ withCredentials: true, timeout: 30_000 })

let inflight: Promise<string> | null = null

/** True while a refresh is in flight; requests wait for it instead of going out with a stale token. */
export function refreshInFlight(): Promise<string> | null {
  return inflight
}

/**
 * Exactly one `POST /api/auth/refresh` at a time: every caller that hits a 401 while one is
 * running awaits the same promise. On failure the session is dropped (once) and the error thrown.
 */
export function refreshOnce(): Promise<string> {
  if (inflight) return inflight
  inflight = (async () => {
    try {
      const res = await authClient.post<TokenAnswer>('/api/auth/refresh', undefined, {
        validateStatus: () => true,
      })
      if (res.status < 200 || res.status >= 300 || !res.data?.access_token) {
        throw toApiError(res.status, res.data, 'Session expired')
      }
      hooks.onTokens(res.data)
      return res.data.access_token
    } catch (err) {
      hooks.onSessionLost()
      if (err instanceof ApiError) throw err
      const res = (err as { response?: { status: number; data: unknown } }).response
      throw res ? toApiError(res.status, res.data, 'Session expired') : toApiError(0, undefined, errorMessage(err))
    } finally {
      inflight = null
    }
  })()
  return inflight
}
