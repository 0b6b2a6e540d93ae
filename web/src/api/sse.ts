import { ApiError, toApiError } from './errors'
import { accessToken, refreshOnce } from './session'

/** One server-sent event: its name (default `message`) and its raw `data` text. */
export interface SseFrame {
  event: string
  data: string
  id?: string
}

/**
 * Incremental parser for `text/event-stream` (WHATWG rules): feed it text in chunks split
 * anywhere — inside a field name, between `\r` and `\n`, in the middle of a JSON value — and
 * it yields the same frames as if the whole stream came at once.
 */
export class SseParser {
  private line = ''
  private event = ''
  private data: string[] = []
  private id: string | undefined
  private afterCR = false

  push(chunk: string): SseFrame[] {
    const out: SseFrame[] = []
    for (let i = 0; i < chunk.length; i++) {
      const ch = chunk[i]
      if (ch === '\n' && this.afterCR) {
        // The `\n` of a `\r\n` pair that was split across chunks: already handled.
        this.afterCR = false
        continue
      }
      this.afterCR = ch === '\r'
      if (ch === '\r' || ch === '\n') {
        const frame = this.takeLine()
        if (frame) out.push(frame)
      } else {
        this.line += ch
      }
    }
    return out
  }

  /** End of stream: a final frame without its blank line is dropped, as the spec says. */
  end(): SseFrame[] {
    this.line = ''
    this.event = ''
    this.data = []
    return []
  }

  private takeLine(): SseFrame | null {
    const line = this.line
    this.line = ''
    if (line === '') return this.dispatch()
    if (line.startsWith(':')) return null
    const colon = line.indexOf(':')
    const field = colon === -1 ? line : line.slice(0, colon)
    let value = colon === -1 ? '' : line.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    switch (field) {
      case 'event':
        this.event = value
        break
      case 'data':
        this.data.push(value)
        break
      case 'id':
        this.id = value
        break
      default:
        break
    }
    return null
  }

  private dispatch(): SseFrame | null {
    const hasData = this.data.length > 0
    const frame: SseFrame = { event: this.event || 'message', data: this.data.join('\n') }
    if (this.id !== undefined) frame.id = this.id
    this.event = ''
    this.data = []
    return hasData ? frame : null
  }
}

/** A parsed event whose `data` was JSON (every event of this API is). */
export interface StreamEvent<T = Record<string, unknown>> {
  event: string
  data: T
}

export interface StreamOptions {
  method?: 'POST' | 'PUT' | 'GET'
  body?: unknown
  signal?: AbortSignal
  onEvent: (ev: StreamEvent) => void
}

/** Reads a byte stream to the end, handing every complete frame to `onFrame`. */
export async function readSse(stream: ReadableStream<Uint8Array>, onFrame: (f: SseFrame) => void): Promise<void> {
  const reader = stream.getReader()
  const decoder = new TextDecoder('utf-8')
  const parser = new SseParser()
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      for (const f of parser.push(decoder.decode(value, { stream: true }))) onFrame(f)
    }
    for (const f of parser.push(decoder.decode())) onFrame(f)
    parser.end()
  } finally {
    reader.releaseLock()
  }
}

function parseData(frame: SseFrame): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(frame.data)
    return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : { value: v }
  } catch {
    return { raw: frame.data }
  }
}

async function errorBody(res: Response): Promise<unknown> {
  const text = await res.text().catch(() => '')
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

/**
 * A streaming request through `fetch` and a reader (EventSource cannot POST a body or send an
 * Authorization header). A 401 before the stream starts refreshes the token once — through the
 * same single-flight refresh as axios — and retries once. Resolves when the stream ends or is
 * aborted through `signal`; rejects with an ApiError when the server refuses the request.
 */
export async function streamRequest(url: string, opts: StreamOptions): Promise<{ aborted: boolean }> {
  const send = (token: string | null) =>
    fetch(url, {
      method: opts.method ?? 'POST',
      credentials: 'same-origin',
      headers: {
        Accept: 'text/event-stream',
        ...(opts.body !== undefined ? { 'Content-Type': 'application/json' } : {}),
        ...(token ? { Authorization: `Bearer ${token}` } : {}),
      },
      body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
      signal: opts.signal,
    })

  try {
    let res = await send(accessToken())
    if (res.status === 401) {
      await res.body?.cancel().catch(() => undefined)
      res = await send(await refreshOnce())
    }
    if (!res.ok) throw toApiError(res.status, await errorBody(res), res.statusText)
    if (!res.body) throw new ApiError(res.status, 'empty_stream', 'The server sent no stream')
    await readSse(res.body, (f) => opts.onEvent({ event: f.event, data: parseData(f) }))
    return { aborted: false }
  } catch (err) {
    if (opts.signal?.aborted || (err instanceof DOMException && err.name === 'AbortError')) return { aborted: true }
    if (err instanceof ApiError) throw err
    throw toApiError(0, undefined, err instanceof Error ? err.message : String(err))
  }
}
