import { authClient } from './session'
import { toApiError } from './errors'
import { get, put } from './request'
import type { TokenAnswer, User } from './types'

async function authPost<T>(url: string, body?: unknown): Promise<T> {
  const res = await authClient.post<T>(url, body, { validateStatus: () => true })
  if (res.status < 200 || res.status >= 300) throw toApiError(res.status, res.data, res.statusText)
  return res.data
}

export const login = (email: string, password: string) => authPost<TokenAnswer>('/api/auth/login', { email, password })
export const register = (body: { email: string; password: string; nickname?: string }) =>
  authPost<User>('/api/auth/register', body)
/** Revokes the refresh token family and clears the cookie. */
export const logout = () => authPost<void>('/api/auth/logout')
export const fetchMe = () => get<User>('/api/auth/me')
export const changePassword = (current_password: string, new_password: string) =>
  put<void>('/api/auth/password', { current_password, new_password })
