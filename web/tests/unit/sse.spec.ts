import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { readSse, SseParser, streamRequest, type SseFrame, type StreamEvent } from '@/api/sse'
import { authClient, configureSession } from '@/api/session'
import type { AxiosAdapter } from 'axios'

const STREAM =
  ': keep-alive comment\r\n' +
  'event: meta\r\ndata: {"session_id":1,"user_message_id":2,"assistant_message_id":3,"model":"m"}\r\n\r\n' +
  'event: reasoning\ndata: {"delta":"想一想 🤔"}\n\n' +
  'event: content\ndata: {"delta":"Hello, 世界"}\n\n' +
  'event: content\ndata: {"delta":"line1\\nline2"}\n\n' +
  'data: first\ndata: second\n\n' +
  'event: usage\rdata: {"prompt_tokens":3,"completion_tokens":5}\r\r' +
  'event: done\ndata: {"finish_reason":"stop","metrics":{"ttft_ms":12}}\n\n' +
  'event: ignored-without-blank-line\ndata: {}'

const bytes = new TextEncoder().encode(STREAM)

function streamOf(chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(ctl) {
      for (const c of chunks) ctl.enqueue(c)
      ctl.close()
    },
  })
}

async function framesOf(chunks: Uint8Array[]): Promise<SseFrame[]> {
  const out: SseFrame[] = []
  await readSse(streamOf(chunks), (f) => out.push(f))
  return out
}

describe('SSE reader', () => {
  it('parses events, comments, CRLF/CR line ends and multi-line data', async () => {
    const frames = await framesOf([bytes])
    expect(frames.map((f) => f.event)).toEqual(['meta', 'reasoning', 'content', 'content', 'message', 'usage', 'done'])
    expect(JSON.parse(frames[1]!.data)).toEqual({ delta: '想一想 🤔' })
    expect(JSON.parse(frames[3]!.data)).toEqual({ delta: 'line1\nline2' })
    expect(frames[4]!.data).toBe('first\nsecond')
  })

  it('gives the same events when the bytes are split at every boundary', async () => {
    const whole = await framesOf([bytes])
    for (let i = 1; i < bytes.length; i++) {
      const split = await framesOf([bytes.slice(0, i), bytes.slice(i)])
      expect(split, `split at byte ${i}`).toEqual(whole)
    }
  })

  it('gives the same events when every byte is its own chunk', async () => {
    const whole = await framesOf([bytes])
    const single = await framesOf(Array.from(bytes, (b) => new Uint8Array([b])))
    expect(single).toEqual(whole)
  })

  it('parser handles a CRLF pair split across pushes without an extra blank line', () => {
    const p = new SseParser()
    expect(p.push('data: a\r')).toEqual([])
    expect(p.push('\ndata: b\r')).toEqual([])
    expect(p.push('\n\r\n')).toEqual([{ event: 'message', data: 'a\nb' }])
  })
})

describe('streamRequest', () => {
  let token: string | null
  let refreshCalls: number

  beforeEach(() => {
    token = 'old'
    refreshCalls = 0
    configureSession({
      getAccessToken: () => token,
      onTokens: (a) => {
        token = a.access_token
      },
      onSessionLost: () => {
        token = null
      },
    })
    const refresh: AxiosAdapter = async (config) => {
      refreshCalls++
      return {
        data: { access_token: 'new', token_type: 'Bearer', expires_in: 900, user: {} },
        status: 200,
        statusText: 'OK',
        headers: {},
        config,
      }
    }
    authClient.defaults.adapter = refresh
  })
  afterEach(() => vi.unstubAllGlobals())

  it('refreshes once on 401 and retries, then streams parsed JSON events', async () => {
    const auths: string[] = []
    vi.stubGlobal(
      'fetch',
      vi.fn(async (_url: string, init: RequestInit) => {
        const auth = (init.headers as Record<string, string>).Authorization ?? ''
        auths.push(auth)
        if (auth !== 'Bearer new') {
          return new Response(JSON.stringify({ error: { code: 'unauthorized', message: 'expired' } }), { status: 401 })
        }
        return new Response(streamOf([bytes]), { status: 200, headers: { 'Content-Type': 'text/event-stream' } })
      }),
    )
    const events: StreamEvent[] = []
    const res = await streamRequest('/api/chat/sessions/1/messages', { body: { content: 'hi' }, onEvent: (e) => events.push(e) })
    expect(res.aborted).toBe(false)
    expect(refreshCalls).toBe(1)
    expect(auths).toEqual(['Bearer old', 'Bearer new'])
    expect(events.find((e) => e.event === 'content')?.data).toEqual({ delta: 'Hello, 世界' })
    expect(events.at(-1)).toEqual({ event: 'done', data: { finish_reason: 'stop', metrics: { ttft_ms: 12 } } })
  })

  it('rejects with the error envelope when the server refuses the stream', async () => {
    token = 'new'
    vi.stubGlobal(
      'fetch',
      vi.fn(
        async () => new Response(JSON.stringify({ error: { code: 'not_found', message: 'no such session' } }), { status: 404 }),
      ),
    )
    await expect(streamRequest('/api/x', { onEvent: () => {} })).rejects.toMatchObject({ status: 404, code: 'not_found' })
  })

  it('resolves as aborted when the AbortController stops it mid-stream', async () => {
    token = 'new'
    const ctl = new AbortController()
    vi.stubGlobal(
      'fetch',
      vi.fn(async (_url: string, init: RequestInit) => {
        const body = new ReadableStream<Uint8Array>({
          start(c) {
            c.enqueue(new TextEncoder().encode('event: content\ndata: {"delta":"a"}\n\n'))
            init.signal?.addEventListener('abort', () => c.error(new DOMException('aborted', 'AbortError')))
          },
        })
        return new Response(body, { status: 200 })
      }),
    )
    const events: StreamEvent[] = []
    const p = streamRequest('/api/x', {
      signal: ctl.signal,
      onEvent: (e) => {
        events.push(e)
        ctl.abort()
      },
    })
    await expect(p).resolves.toEqual({ aborted: true })
    expect(events).toHaveLength(1)
  })
})
