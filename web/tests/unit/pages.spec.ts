import { beforeEach, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount } from '@vue/test-utils'
import { createPinia, setActivePinia } from 'pinia'
import ElementPlus from 'element-plus'
import * as Icons from '@element-plus/icons-vue'
import type { App, Component } from 'vue'
import { i18n } from '@/locales'
import { ApiError } from '@/api/errors'
import * as usersApi from '@/api/users'
import * as providersApi from '@/api/providers'
import * as promptsApi from '@/api/prompts'
import UsersView from '@/views/system/UsersView.vue'
import ProvidersView from '@/views/models/ProvidersView.vue'
import TestPromptsView from '@/views/chat/TestPromptsView.vue'

const icons = { install: (app: App) => Object.entries(Icons).forEach(([n, c]) => app.component(n, c as Component)) }
const mountPage = (c: Component) =>
  mount(c, {
    global: { plugins: [i18n, ElementPlus, icons], stubs: { RouterLink: true, transition: false, 'transition-group': false } },
  })
const empty = { items: [], total: 0, page: 1, page_size: 20 }

describe('pages show API errors and empty lists visibly', () => {
  beforeEach(() => {
    setActivePinia(createPinia())
    i18n.global.locale.value = 'en'
  })

  it('users: an API error is shown with a retry that reloads', async () => {
    const list = vi.spyOn(usersApi, 'listUsers').mockRejectedValueOnce(new ApiError(500, 'internal', 'database unavailable'))
    list.mockResolvedValue(empty)
    const w = mountPage(UsersView)
    await flushPromises()
    const alert = w.find('[data-testid="error-alert"]')
    expect(alert.exists()).toBe(true)
    expect(alert.text()).toContain('database unavailable')
    await alert.find('button').trigger('click')
    await flushPromises()
    expect(list).toHaveBeenCalledTimes(2)
    expect(w.find('[data-testid="error-alert"]').exists()).toBe(false)
    expect(w.text()).toContain('No users')
  })

  it('providers: an empty list says so', async () => {
    vi.spyOn(providersApi, 'listProviders').mockResolvedValue(empty)
    const w = mountPage(ProvidersView)
    await flushPromises()
    expect(w.text()).toContain('No providers yet')
  })

  it('test prompts: rows render, and a 422 on save shows inline field errors', async () => {
    vi.spyOn(promptsApi, 'listTestPrompts').mockResolvedValue({
      items: [
        {
          id: 1,
          title: 'Primes',
          content: 'Name three primes',
          created_by: 1,
          created_at: '2026-01-01T00:00:00Z',
          updated_at: null,
        },
      ],
      total: 1,
      page: 1,
      page_size: 20,
    })
    vi.spyOn(promptsApi, 'createTestPrompt').mockRejectedValue(
      new ApiError(422, 'validation_failed', 'Invalid', { title: 'title is too long' }),
    )
    const w = mountPage(TestPromptsView)
    await flushPromises()
    expect(w.text()).toContain('Primes')
    await w.find('[data-testid="test-prompt-create"]').trigger('click')
    await flushPromises()
    const title = w.find('[data-testid="test-prompt-title"]')
    await (title.element.tagName === 'INPUT' ? title : title.find('input')).setValue('x'.repeat(300))
    const content = w.find('[data-testid="test-prompt-content"]')
    await (content.element.tagName === 'TEXTAREA' ? content : content.find('textarea')).setValue('c')
    const save = w.findAll('.el-dialog .el-button--primary').at(-1)!
    await save.trigger('click')
    await flushPromises()
    expect(promptsApi.createTestPrompt).toHaveBeenCalledOnce()
    await new Promise((r) => setTimeout(r, 250)) // Element Plus debounces the error state
    expect(w.find('.el-form-item__error').text()).toContain('title is too long')
    w.unmount()
  })
})
