import { createRouter, createWebHistory, type RouteLocationNormalized, type RouteRecordRaw } from 'vue-router'
import { useAuthStore } from '@/stores/auth'

declare module 'vue-router' {
  interface RouteMeta {
    /** i18n key of the page title and menu entry. */
    title?: string
    /** Menu group: one of the four areas of the design. */
    area?: 'models' | 'chat' | 'training' | 'system'
    icon?: string
    public?: boolean
    admin?: boolean
    /** Not listed in the side menu. */
    hidden?: boolean
    /** The menu entry to highlight on a page that has none of its own (a detail page). */
    activeMenu?: string
  }
}

export const appRoutes: RouteRecordRaw[] = [
  {
    path: 'providers',
    name: 'providers',
    component: () => import('@/views/models/ProvidersView.vue'),
    meta: { title: 'menu.providers', area: 'models', icon: 'Connection', admin: true },
  },
  {
    path: 'model-configs',
    name: 'model-configs',
    component: () => import('@/views/models/ModelConfigsView.vue'),
    meta: { title: 'menu.modelConfigs', area: 'models', icon: 'SetUp' },
  },
  {
    path: 'models',
    name: 'models',
    component: () => import('@/views/models/LocalModelsView.vue'),
    meta: { title: 'menu.localModels', area: 'models', icon: 'Box' },
  },
  {
    path: 'playground',
    name: 'playground',
    component: () => import('@/views/chat/PlaygroundView.vue'),
    meta: { title: 'menu.playground', area: 'chat', icon: 'ChatDotRound' },
  },
  {
    path: 'comparison',
    name: 'comparison',
    component: () => import('@/views/chat/ComparisonView.vue'),
    meta: { title: 'menu.comparison', area: 'chat', icon: 'Operation' },
  },
  {
    path: 'system-prompts',
    name: 'system-prompts',
    component: () => import('@/views/chat/SystemPromptsView.vue'),
    meta: { title: 'menu.systemPrompts', area: 'chat', icon: 'Memo' },
  },
  {
    path: 'test-prompts',
    name: 'test-prompts',
    component: () => import('@/views/chat/TestPromptsView.vue'),
    meta: { title: 'menu.testPrompts', area: 'chat', icon: 'Document' },
  },
  {
    path: 'datasets',
    name: 'datasets',
    component: () => import('@/views/training/DatasetsView.vue'),
    meta: { title: 'menu.datasets', area: 'training', icon: 'Files' },
  },
  {
    path: 'training-configs',
    name: 'training-configs',
    component: () => import('@/views/training/TrainingConfigsView.vue'),
    meta: { title: 'menu.trainingConfigs', area: 'training', icon: 'Tools' },
  },
  {
    path: 'admin/users',
    name: 'admin-users',
    component: () => import('@/views/system/UsersView.vue'),
    meta: { title: 'menu.users', area: 'system', icon: 'User', admin: true },
  },
  {
    path: 'admin/settings',
    name: 'admin-settings',
    component: () => import('@/views/system/SettingsView.vue'),
    meta: { title: 'menu.settings', area: 'system', icon: 'Setting', admin: true },
  },
  {
    path: 'account',
    name: 'account',
    component: () => import('@/views/system/AccountView.vue'),
    meta: { title: 'menu.account', area: 'system', icon: 'Key' },
  },
  {
    path: 'training-tasks',
    name: 'training-tasks',
    component: () => import('@/views/training/TrainingTasksView.vue'),
    meta: { title: 'menu.trainingTasks', area: 'training', icon: 'TrendCharts' },
  },
  {
    path: 'training-tasks/:id(\\d+)',
    name: 'training-task',
    component: () => import('@/views/training/TrainingTaskDetailView.vue'),
    meta: { title: 'menu.trainingTask', area: 'training', hidden: true, activeMenu: '/training-tasks' },
  },
  {
    path: 'forbidden',
    name: 'forbidden',
    component: () => import('@/views/errors/ForbiddenView.vue'),
    meta: { title: 'errors.forbiddenTitle', hidden: true },
  },
]

const routes: RouteRecordRaw[] = [
  {
    path: '/login',
    name: 'login',
    component: () => import('@/views/auth/LoginView.vue'),
    meta: { title: 'login.title', public: true },
  },
  {
    path: '/',
    component: () => import('@/layouts/AppLayout.vue'),
    redirect: { name: 'playground' },
    children: appRoutes,
  },
  {
    path: '/:pathMatch(.*)*',
    name: 'not-found',
    component: () => import('@/views/errors/NotFoundView.vue'),
    meta: { title: 'errors.notFoundTitle', public: true },
  },
]

/** Only same-app paths are accepted as a post-login destination (no open redirect). */
export function safeRedirect(value: unknown): string {
  const s = Array.isArray(value) ? value[0] : value
  if (typeof s === 'string' && s.startsWith('/') && !s.startsWith('//') && !s.startsWith('/login')) return s
  return '/'
}

/** The guard, exported for tests: session restore, login redirect with a way back, admin-only pages. */
export async function authGuard(to: RouteLocationNormalized) {
  const auth = useAuthStore()
  await auth.boot()
  if (to.meta.public) {
    if (to.name === 'login' && auth.isAuthenticated) return safeRedirect(to.query.redirect)
    return true
  }
  if (!auth.isAuthenticated) return { name: 'login', query: { redirect: to.fullPath } }
  if (to.matched.some((r) => r.meta.admin) && !auth.isAdmin) return { name: 'forbidden' }
  return true
}

export function buildRouter() {
  const router = createRouter({ history: createWebHistory('/'), routes })
  router.beforeEach(authGuard)
  return router
}
