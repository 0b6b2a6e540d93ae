import axios, { AxiosError, type AxiosRequestConfig, type InternalAxiosRequestConfig } from 'axios'
import { ApiError, toApiError } from './errors'
import { accessToken, refreshInFlight, refreshOnce } from './session'
import type { Page } from './types'

interface RetryableConfig extends InternalAxiosRequestConfig {
  /** Set once the request has been retried after a refresh, so a second 401 fails. */
  _retried?: boolean
  /** The token this attempt was sent with, to tell a stale 401 from a real one. */
  _token?: string | null
}

/** The one axios instance every API module goes through. */
export const http = axios.create({
  baseURL: '/',
  timeout: 60_000,
  withCredentials: true,
})

http.interceptors.request.use(async (config: RetryableConfig) => {
  // Queue behind a refresh in flight rather than send a token we know is about to change.
  const pending = refreshInFlight()
  if (pending) {
    try {
      await pending
    } catch {
      throw new ApiError(401, 'unauthorized', 'Session expired')
    }
  }
  const token = accessToken()
  config._token = token
  if (token) config.headers.set('Authorization', `Bearer ${token}`)
  else config.headers.delete('Authorization')
  return config
})

async function parseBlob(blob: Blob): Promise<unknown> {
  const text = await blob.text()
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

http.interceptors.response.use(
  (res) => res,
  async (error: AxiosError | ApiError) => {
    if (error instanceof ApiError) throw error
    const config = error.config as RetryableConfig | undefined
    const status = error.response?.status ?? 0
    if (status === 401 && config && !config._retried) {
      config._retried = true
      const current = accessToken()
      // Someone else already refreshed while this request was on the wire: just retry.
      if (!(current && current !== config._token)) {
        await refreshOnce()
      }
      return http.request(config)
    }
    if (error.response) {
      let body: unknown = error.response.data
      // Blob downloads carry their error envelope as a Blob too.
      if (typeof Blob !== 'undefined' && body instanceof Blob) body = await parseBlob(body)
      throw toApiError(status, body, error.message)
    }
    if (axios.isCancel(error)) throw new ApiError(0, 'cancelled', 'Request cancelled')
    throw toApiError(0, undefined, error.message)
  },
)

export async function get<T>(url: string, config?: AxiosRequestConfig): Promise<T> {
  return (await http.get<T>(url, config)).data
}
export async function post<T>(url: string, body?: unknown, config?: AxiosRequestConfig): Promise<T> {
  return (await http.post<T>(url, body, config)).data
}
export async function put<T>(url: string, body?: unknown, config?: AxiosRequestConfig): Promise<T> {
  return (await http.put<T>(url, body, config)).data
}
export async function patch<T>(url: string, body?: unknown, config?: AxiosRequestConfig): Promise<T> {
  return (await http.patch<T>(url, body, config)).data
}
export async function del(url: string, config?: AxiosRequestConfig): Promise<void> {
  await http.delete(url, config)
}

/**
 * Lists answer `{items, total, page, page_size}`; a bare array is accepted too so a page keeps
 * working if a small collection is ever returned unpaginated.
 */
export function asPage<T>(body: Page<T> | T[]): Page<T> {
  if (Array.isArray(body)) return { items: body, total: body.length, page: 1, page_size: body.length }
  return body
}

export async function getPage<T>(url: string, params?: Record<string, unknown>): Promise<Page<T>> {
  return asPage(await get<Page<T> | T[]>(url, { params: cleanParams(params) }))
}

/** Fetches every page of a list (for pickers); stops at `limit` items. */
export async function getAll<T>(url: string, params?: Record<string, unknown>, limit = 1000): Promise<T[]> {
  const out: T[] = []
  for (let page = 1; out.length < limit; page++) {
    const p = await getPage<T>(url, { ...params, page, page_size: 100 })
    out.push(...p.items)
    if (p.items.length === 0 || out.length >= p.total || p.items.length < p.page_size) break
  }
  return out
}

function cleanParams(params?: Record<string, unknown>): Record<string, unknown> | undefined {
  if (!params) return undefined
  return Object.fromEntries(Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ''))
}

/** Downloads an authenticated file (exports) through the same refresh-aware client. */
export async function download(url: string, fallbackName: string): Promise<void> {
  const res = await http.get<Blob>(url, { responseType: 'blob' })
  const disposition = String(res.headers['content-disposition'] ?? '')
  const match = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition)
  const name = match?.[1] ? decodeURIComponent(match[1]) : fallbackName
  const href = URL.createObjectURL(res.data)
  const a = document.createElement('a')
  a.href = href
  a.download = name
  document.body.appendChild(a)
  a.click()
  a.remove()
  setTimeout(() => URL.revokeObjectURL(href), 1000)
}
