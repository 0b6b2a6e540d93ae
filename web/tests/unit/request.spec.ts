import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { AxiosError, type AxiosAdapter, type AxiosResponse, type InternalAxiosRequestConfig } from 'axios'
import { http, get } from '@/api/request'
import { authClient, configureSession } from '@/api/session'
import { ApiError } from '@/api/errors'
import type { TokenAnswer } from '@/api/types'

const user = {
  id: 1,
  email: 'a@b.c',
  nickname: null,
  role: 'admin',
  is_admin: true,
  is_active: true,
  created_at: '',
  updated_at: null,
} as const

function respond(config: InternalAxiosRequestConfig, status: number, data: unknown): Promise<AxiosResponse> {
  const response = { data, status, statusText: String(status), headers: {}, config } as AxiosResponse
  if (status >= 400) {
    return Promise.reject(new AxiosError(`HTTP ${status}`, 'ERR_BAD_REQUEST', config, null, response))
  }
  return Promise.resolve(response)
}

const tick = () => new Promise((r) => setTimeout(r, 5))

describe('request layer: refresh on 401', () => {
  let token: string | null
  let lost: number
  let refreshCalls: number
  let refreshOk: boolean
  let seen: Array<string | undefined>

  beforeEach(() => {
    token = 'old'
    lost = 0
    refreshCalls = 0
    refreshOk = true
    seen = []
    configureSession({
      getAccessToken: () => token,
      onTokens: (a: TokenAnswer) => {
        token = a.access_token
      },
      onSessionLost: () => {
        lost++
        token = null
      },
    })
    // The "server": only the token "new" is valid.
    const api: AxiosAdapter = async (config) => {
      await tick()
      const auth = config.headers.get('Authorization') as string | undefined
      seen.push(auth)
      if (auth !== 'Bearer new') return respond(config, 401, { error: { code: 'unauthorized', message: 'expired' } })
      return respond(config, 200, { url: config.url })
    }
    const refresh: AxiosAdapter = async (config) => {
      refreshCalls++
      await tick()
      if (!refreshOk) return respond(config, 401, { error: { code: 'invalid_refresh', message: 'no session' } })
      return respond(config, 200, { access_token: 'new', token_type: 'Bearer', expires_in: 900, user })
    }
    http.defaults.adapter = api
    authClient.defaults.adapter = refresh
  })

  afterEach(() => {
    vi.restoreAllMocks()
  })

  it('refreshes exactly once for several concurrent 401s and retries them all', async () => {
    const results = await Promise.all([get('/api/a'), get('/api/b'), get('/api/c'), get('/api/d'), get('/api/e')])
    expect(refreshCalls).toBe(1)
    expect(results.map((r) => (r as { url: string }).url)).toEqual(['/api/a', '/api/b', '/api/c', '/api/d', '/api/e'])
    expect(seen.filter((s) => s === 'Bearer old')).toHaveLength(5)
    expect(seen.filter((s) => s === 'Bearer new')).toHaveLength(5)
    expect(lost).toBe(0)
  })

  it('queues requests made while a refresh is in flight behind it', async () => {
    const first = get('/api/a')
    await new Promise((r) => setTimeout(r, 8)) // first got its 401, refresh is running
    const late = get('/api/late')
    await Promise.all([first, late])
    expect(refreshCalls).toBe(1)
    // The late request waited and went out with the new token straight away.
    expect(seen.filter((s) => s === 'Bearer old')).toHaveLength(1)
  })

  it('retries only once: a second 401 after the refresh is an error', async () => {
    http.defaults.adapter = async (config) => {
      await tick()
      return respond(config, 401, { error: { code: 'unauthorized', message: 'still no' } })
    }
    await expect(get('/api/a')).rejects.toMatchObject({ status: 401, code: 'unauthorized' })
    expect(refreshCalls).toBe(1)
  })

  it('on refresh failure drops the session once and rejects every waiting request', async () => {
    refreshOk = false
    const all = await Promise.allSettled([get('/api/a'), get('/api/b'), get('/api/c')])
    expect(refreshCalls).toBe(1)
    expect(lost).toBe(1)
    expect(token).toBeNull()
    for (const r of all) {
      expect(r.status).toBe('rejected')
      expect((r as PromiseRejectedResult).reason).toBeInstanceOf(ApiError)
      expect((r as PromiseRejectedResult).reason.status).toBe(401)
    }
  })

  it('unwraps the error envelope into a typed ApiError with fields', async () => {
    token = 'new'
    http.defaults.adapter = (config) =>
      respond(config, 422, { error: { code: 'validation', message: 'bad input', fields: { temperature: 'must be 0..2' } } })
    const err = await get('/api/x').catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ApiError)
    expect(err).toMatchObject({ status: 422, code: 'validation', message: 'bad input', fields: { temperature: 'must be 0..2' } })
    expect(refreshCalls).toBe(0)
  })

  it('turns a body without an envelope into an ApiError too', async () => {
    token = 'new'
    http.defaults.adapter = (config) => respond(config, 502, '<html>Bad gateway</html>')
    await expect(get('/api/x')).rejects.toMatchObject({ status: 502, code: 'http_502' })
  })
})
